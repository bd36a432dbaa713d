package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/berth-dev/berth/app"
	"github.com/berth-dev/berth/controlplane"
	"github.com/berth-dev/berth/internal/httpapi"
)

// imageConfig fills an image deploy's settings from the flags.
func (d *deployFlags) imageConfig(cfg *app.Config) error {
	if d.image == "" {
		if d.args != "" || d.regServer != "" {
			return usageError("--args and --registry-server go with --image")
		}
		return nil
	}
	cfg.Source = &app.Source{Image: d.image}
	cfg.Command = ""
	var err error
	if d.command != "" {
		if cfg.Entrypoint, err = splitArgs(d.command); err != nil {
			return usageError("--command: " + err.Error())
		}
	}
	if d.args != "" {
		if cfg.Args, err = splitArgs(d.args); err != nil {
			return usageError("--args: " + err.Error())
		}
	}
	if d.regServer == "" {
		if d.regUser != "" || d.regPasswordStdin {
			return usageError("--registry-username and --registry-password-stdin need --registry-server HOST")
		}
		return nil
	}
	reg := app.Registry{Server: d.regServer, Username: d.regUser}
	if d.regPasswordStdin {
		if d.regUser == "" {
			return usageError("--registry-password-stdin needs --registry-username")
		}
		b, err := io.ReadAll(io.LimitReader(os.Stdin, 16<<10))
		if err != nil {
			return err
		}
		reg.Password = strings.TrimRight(string(b), "\r\n")
	}
	cfg.Registries = []app.Registry{reg}
	return nil
}

// splitArgs splits a command line as a shell would, without expansions:
// words separated by blanks, with '…' and "…" quoting and \ escapes.
func splitArgs(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord := false
	var quote rune
	escaped := false
	for _, r := range s {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case quote != 0:
			if r == quote {
				quote = 0
			} else if r == '\\' && quote == '"' {
				escaped = true
			} else {
				cur.WriteRune(r)
			}
		case r == '\\':
			escaped, inWord = true, true
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t' || r == '\n':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 || escaped {
		return nil, fmt.Errorf("unterminated quote or escape in %q", s)
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
}

// deployRevision posts a deploy. An image deploy streams the pull's
// progress (drawn per layer on a terminal) before its result.
func deployRevision(ctx context.Context, c *apiClient, name string, cfg app.Config, asJSON bool) (*controlplane.DeployResult, error) {
	path := "/v1/apps/" + name + "/revisions"
	if !cfg.HasImage() {
		var out controlplane.DeployResult
		if err := c.call(ctx, http.MethodPost, path, cfg, &out); err != nil {
			return nil, err
		}
		return &out, nil
	}
	b, _ := json.Marshal(cfg)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := (&http.Client{}).Do(req) // no timeout: a big pull takes what it takes
	if err != nil {
		return nil, fmt.Errorf("cannot reach the server at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var eb httpapi.Body
		if json.NewDecoder(resp.Body).Decode(&eb) == nil && eb.Error.Message != "" {
			return nil, fmt.Errorf("%s", eb.Error.Message)
		}
		return nil, fmt.Errorf("server answered %s", resp.Status)
	}
	view := newProgressView(os.Stderr, isTerminal(os.Stderr) && !asJSON)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var ev controlplane.DeployEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return nil, fmt.Errorf("bad answer from the server: %w", err)
		}
		switch {
		case ev.Error != "":
			return nil, fmt.Errorf("%s", ev.Error)
		case ev.Result != nil:
			return ev.Result, nil
		case ev.Progress != nil && !asJSON && view.tty:
			view.update(*ev.Progress)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("the server ended the deploy without a result")
}

// revisionCommand is what a revision runs, for the revisions table.
func revisionCommand(c app.Config) string {
	if !c.HasImage() {
		return c.Command
	}
	s := "image " + c.Source.Image
	if len(c.Entrypoint) > 0 || len(c.Args) > 0 {
		s += " " + strings.Join(append(append([]string(nil), c.Entrypoint...), c.Args...), " ")
	}
	return s
}
