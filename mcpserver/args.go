package mcpserver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
)

// argError is a bad tool argument; its message names the argument and
// says what is expected, so that a model can correct its call.
type argError struct{ msg string }

func (e *argError) Error() string { return e.msg }

func badArg(name, format string, a ...any) error {
	return &argError{msg: fmt.Sprintf("invalid argument %q: ", name) + fmt.Sprintf(format, a...)}
}

// args are a tool call's arguments, checked by name and type. A JSON null
// counts as absent.
type args map[string]json.RawMessage

// parseArgs decodes the arguments object and refuses names the tool does
// not take.
func parseArgs(raw json.RawMessage, allowed ...string) (args, error) {
	a := args{}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return a, nil
	}
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, &argError{msg: "the arguments must be a JSON object: " + err.Error()}
	}
	var unknown []string
	for k, v := range a {
		if string(bytes.TrimSpace(v)) == "null" {
			delete(a, k)
			continue
		}
		if !slices.Contains(allowed, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		takes := "no arguments"
		if len(allowed) > 0 {
			takes = "only " + strings.Join(allowed, ", ")
		}
		return nil, &argError{msg: fmt.Sprintf("unknown argument %q: this tool takes %s", unknown[0], takes)}
	}
	return a, nil
}

func (a args) has(name string) bool { _, ok := a[name]; return ok }

// str returns a string argument; required ones must be present and not
// empty.
func (a args) str(name string, required bool) (string, error) {
	raw, ok := a[name]
	if !ok {
		if required {
			return "", badArg(name, "it is required")
		}
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", badArg(name, "it must be a string, not %s", kind(raw))
	}
	if required && s == "" {
		return "", badArg(name, "it must not be empty")
	}
	return s, nil
}

// strList returns a non-empty array of strings.
func (a args) strList(name string) ([]string, error) {
	raw := a[name]
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, badArg(name, `it must be an array of strings such as ["ls", "-l"], not %s`, kind(raw))
	}
	if len(list) == 0 || list[0] == "" {
		return nil, badArg(name, "it must start with the program to run")
	}
	return list, nil
}

// seconds returns an optional positive whole number of seconds (0 when
// absent).
func (a args) seconds(name string) (int, error) {
	raw, ok := a[name]
	if !ok {
		return 0, nil
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil || f != math.Trunc(f) || f < 1 {
		return 0, badArg(name, "it must be a whole number of seconds of at least 1, not %s", string(raw))
	}
	// Larger values are capped by the pool's timeout anyway.
	return int(min(f, 86400)), nil
}

func kind(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	}
	return "a number"
}
