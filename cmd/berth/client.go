package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/httpapi"
	"github.com/berth-dev/berth/server"
)

// clientFlags are the flags every client command takes.
type clientFlags struct {
	dataDir string
	server  string
	token   string
	output  string
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.dataDir, "data-dir", server.DefaultDataDir(), "the server's data directory, to find it and its token [$BERTH_DATA_DIR]")
	fs.StringVar(&c.server, "server", os.Getenv("BERTH_SERVER"), "control API URL (default: from the data directory) [$BERTH_SERVER]")
	fs.StringVar(&c.token, "token", os.Getenv("BERTH_TOKEN"), "admin token (default: from the data directory) [$BERTH_TOKEN]")
	fs.StringVar(&c.output, "o", "text", "output format: text or json")
}

// parseArgs parses flags that may come before or after positional
// arguments ("berth pool create NAME --type python").
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, flagError(err)
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// groupCmd is a parsed command of a group (berth image|registry|secret).
type groupCmd struct {
	sub  string
	pos  []string
	c    *apiClient
	json bool // -o json
}

// parseGroup parses "GROUP SUB [flags] ARGS…": SUB must be a key of want,
// which says how many positional arguments it takes; flags, if set,
// registers SUB's own flags. With no SUB or -h it prints usage and
// returns nil, nil.
func parseGroup(group, usage string, args []string, want map[string]int, flags func(sub string, fs *flag.FlagSet)) (*groupCmd, error) {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Println(usage)
		return nil, nil
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet(group+" "+sub, flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	if flags != nil {
		flags(sub, fs)
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return nil, err
	}
	n, ok := want[sub]
	if !ok {
		return nil, usageError(fmt.Sprintf("unknown %s command %q\n\n%s", group, sub, usage))
	}
	if n >= 0 && len(pos) != n { // a negative count: the caller checks
		return nil, usageError(fmt.Sprintf("%s %s takes %d argument(s)\n\n%s", group, sub, n, usage))
	}
	c, err := cf.client()
	if err != nil {
		return nil, err
	}
	return &groupCmd{sub: sub, pos: pos, c: c, json: cf.output == "json"}, nil
}

// flagError makes a flag parsing error a usage error (exit status 2);
// -h stays flag.ErrHelp (exit status 0).
func flagError(err error) error {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return usageError(err.Error())
}

// apiClient calls the control API.
type apiClient struct {
	base  string
	token string
	hc    *http.Client
}

func (c *clientFlags) client() (*apiClient, error) {
	if c.output != "text" && c.output != "json" {
		return nil, usageError("-o must be text or json")
	}
	base, token := c.server, c.token
	if base == "" {
		b, err := os.ReadFile(filepath.Join(c.dataDir, server.InfoFile))
		if err != nil {
			return nil, fmt.Errorf("no running server found in %s (start one with `berth up`, or pass --server and --token)", c.dataDir)
		}
		var info server.Info
		if err := json.Unmarshal(b, &info); err != nil {
			return nil, fmt.Errorf("%s: %w", server.InfoFile, err)
		}
		base = info.AdminURL
	}
	if token == "" {
		b, err := os.ReadFile(filepath.Join(c.dataDir, server.TokenFile))
		if err != nil {
			return nil, fmt.Errorf("no admin token: pass --token or --data-dir of the server (%v)", err)
		}
		token = strings.TrimSpace(string(b))
	}
	return &apiClient{base: strings.TrimRight(base, "/"), token: token, hc: &http.Client{Timeout: 5 * time.Minute}}, nil
}

// request is a request to the control API with the admin token and body,
// if not nil, as JSON.
func (a *apiClient) request(ctx context.Context, method, path string, body any) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// call sends a request and decodes the JSON answer into out (if not nil).
func (a *apiClient) call(ctx context.Context, method, path string, body, out any) error {
	req, err := a.request(ctx, method, path, body)
	if err != nil {
		return err
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the server at %s: %w", a.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return apiError(resp)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// apiError is the message of an error response.
func apiError(resp *http.Response) error {
	var eb httpapi.Body
	if json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&eb) == nil && eb.Error.Message != "" {
		return fmt.Errorf("%s", eb.Error.Message)
	}
	return fmt.Errorf("server answered %s", resp.Status)
}

// errStop ends a stream early without an error.
var errStop = errors.New("stop")

// stream sends a request (body, if not nil, as JSON) and reads the
// NDJSON answer line by line, until fn returns errStop or an error, the
// answer ends, or ctx is done (not an error: -f follows until
// interrupted). No timeout: a stream lasts what it lasts.
func (a *apiClient) stream(ctx context.Context, method, path string, body any, fn func([]byte) error) error {
	req, err := a.request(ctx, method, path, body)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("cannot reach the server at %s: %w", a.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return apiError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		if err := fn(sc.Bytes()); err != nil {
			if errors.Is(err, errStop) {
				return nil
			}
			return err
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return sc.Err()
}

// isTerminal reports whether f is a terminal (not merely a character
// device such as /dev/null).
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
