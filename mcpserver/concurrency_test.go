package mcpserver_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/mcpserver"
	"github.com/berth-dev/berth/pool"
)

// TestConcurrentClients runs many MCP clients at once, each with its own
// environments, and checks that every output arrives whole and that no
// client sees another's files, variables or output.
func TestConcurrentClients(t *testing.T) {
	const (
		clients = 8
		envsPer = 2
		rounds  = 3
		lines   = 1500 // about 100 KB of output per call
	)
	e := newEnv(t, mcpserver.Options{})
	key := e.create(t, pool.Config{Name: "p", Ready: 4, Max: clients * envsPer})
	versions := []string{"2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"}

	var wg sync.WaitGroup
	envs := make([][]string, clients)
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := runClient(t, e.url("p"), key, versions[i%len(versions)], i, envsPer, rounds, lines, &envs[i]); err != nil {
				errs <- fmt.Errorf("client %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	// Every environment is a distinct session of the pool.
	var all []string
	for _, l := range envs {
		all = append(all, l...)
	}
	var live []string
	for _, s := range e.mustPool(t, "p").Sessions() {
		live = append(live, s.Identifier)
	}
	slices.Sort(all)
	slices.Sort(live)
	if len(slices.Compact(slices.Clone(all))) != clients*envsPer || !slices.Equal(all, live) {
		t.Fatalf("environments %v, pool sessions %v", all, live)
	}
}

// runClient is one client's work; it returns the first discrepancy.
func runClient(t *testing.T, url, key, version string, n, envsPer, rounds, lines int, out *[]string) error {
	c, err := connect(t, url, key, connectOpts{version: version})
	if err != nil {
		return err
	}
	call := func(tool string, args map[string]any, v any) error {
		r, err := c.try(tool, args, nil)
		if err != nil {
			return fmt.Errorf("%s: %w", tool, err)
		}
		if r.IsError {
			return fmt.Errorf("%s: %s", tool, text(r))
		}
		// Not decode: this runs outside the test's goroutine.
		raw, err := json.Marshal(r.StructuredContent)
		if err == nil {
			err = json.Unmarshal(raw, v)
		}
		return err
	}
	var ids []string
	for range envsPer {
		var l struct{ EnvironmentID string }
		if err := call(mcpserver.ToolLaunchShell, map[string]any{}, &l); err != nil {
			return err
		}
		ids = append(ids, l.EnvironmentID)
	}
	*out = ids
	for j, id := range ids {
		mark := fmt.Sprintf("c%de%d", n, j)
		var up mcpserver.FileOutput
		if err := call(mcpserver.ToolUploadFile, map[string]any{"environmentId": id, "path": "owner.txt", "content": mark}, &up); err != nil {
			return err
		}
		var py mcpserver.PythonOutput
		if err := call(mcpserver.ToolRunPython, map[string]any{"environmentId": id, "pythonCode": fmt.Sprintf("owner = %q", mark)}, &py); err != nil {
			return err
		}
	}
	for round := range rounds {
		for j, id := range ids {
			mark := fmt.Sprintf("c%de%d", n, j)
			// Output that only this environment can produce.
			cmd := fmt.Sprintf(`o=$(cat owner.txt); for i in $(seq 1 %d); do echo "$o-%d-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"; done`, lines, round)
			var sh mcpserver.ShellOutput
			if err := call(mcpserver.ToolRunShell, map[string]any{"environmentId": id, "shellCommand": cmd}, &sh); err != nil {
				return err
			}
			var want strings.Builder
			for i := 1; i <= lines; i++ {
				fmt.Fprintf(&want, "%s-%d-%d-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n", mark, round, i)
			}
			if sh.Stdout != want.String() || sh.ExitCode != 0 || sh.StdoutTruncated {
				return fmt.Errorf("round %d env %s: %d bytes of stdout, want %d (first line %q)", round, id, len(sh.Stdout), want.Len(), strings.SplitN(sh.Stdout, "\n", 2)[0])
			}
			var py mcpserver.PythonOutput
			if err := call(mcpserver.ToolRunPython, map[string]any{"environmentId": id, "pythonCode": "owner"}, &py); err != nil {
				return err
			}
			if string(py.Result) != fmt.Sprintf("%q", mark) {
				return fmt.Errorf("python state of %s is %s, want %q", id, py.Result, mark)
			}
		}
	}
	// Only its own file is there.
	for j, id := range ids {
		var ls struct{ Files []mcpserver.FileEntry }
		if err := call(mcpserver.ToolListFiles, map[string]any{"environmentId": id}, &ls); err != nil {
			return err
		}
		var down mcpserver.FileOutput
		if err := call(mcpserver.ToolDownloadFile, map[string]any{"environmentId": id, "path": "owner.txt"}, &down); err != nil {
			return err
		}
		if len(ls.Files) != 1 || *down.Content != fmt.Sprintf("c%de%d", n, j) {
			return fmt.Errorf("environment %s holds %+v, owner %q", id, ls.Files, *down.Content)
		}
	}
	return nil
}
