package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/berth-dev/berth/controlplane"
	"github.com/berth-dev/berth/internal/testutil"
	"github.com/berth-dev/berth/server"
)

var (
	everythingOnce sync.Once
	everythingDir  string
	everythingErr  error
)

// everythingServer builds the go-sdk's conformance server (static) once and
// returns the directory that holds it, ready to be an app's --dir.
func everythingServer(t testing.TB) string {
	t.Helper()
	everythingOnce.Do(func() {
		everythingDir, everythingErr = os.MkdirTemp("", "berth-everything-")
		if everythingErr != nil {
			return
		}
		cmd := exec.Command("go", "install", "github.com/modelcontextprotocol/go-sdk/conformance/everything-server@v1.8.0")
		cmd.Env = append(os.Environ(), "GOBIN="+everythingDir, "CGO_ENABLED=0")
		cmd.Dir = os.TempDir()
		if out, err := cmd.CombinedOutput(); err != nil {
			everythingErr = fmt.Errorf("go install everything-server: %v\n%s", err, out)
		}
	})
	if everythingErr != nil {
		t.Fatal(everythingErr)
	}
	return everythingDir
}

const everythingCommand = `./everything-server -http 127.0.0.1:$PORT -stateless=false`

func (b *berth) appShow(name string) controlplane.AppView {
	b.t.Helper()
	var v controlplane.AppView
	b.cliJSON(&v, "app", "show", name)
	return v
}

// waitReplicas waits until an app has n ready replicas (of any revision).
func (b *berth) waitReplicas(name string, n int) controlplane.AppView {
	b.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		v := b.appShow(name)
		ready := 0
		for _, r := range v.Replicas {
			if r.Ready {
				ready++
			}
		}
		if ready == n && len(v.Replicas) == n {
			return v
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("app %s: want %d ready replicas, have %+v", name, n, v.Replicas)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func runConformance(t *testing.T, in interop, url string) conformance {
	t.Helper()
	results := t.TempDir()
	empty := filepath.Join(t.TempDir(), "none.yml")
	_ = os.WriteFile(empty, nil, 0o644)
	out, errOut, _ := in.try(in.dir, in.pkg("@modelcontextprotocol/conformance", "dist", "index.js"), "server", "--url", url, "-o", results)
	c := conformanceSummary(t, results, empty)
	if len(c.status) == 0 {
		t.Fatalf("conformance produced no results:\n%s\n%s", out, errOut)
	}
	return c
}

func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestAppConformanceThroughGateway deploys the go-sdk conformance server
// with 3 replicas and runs the official conformance suite through the
// gateway; the results must be exactly those of the server tested directly.
func TestAppConformanceThroughGateway(t *testing.T) {
	in := needInterop(t)
	dir := everythingServer(t)
	b := startBerth(t, "")

	port := freePort(t)
	direct := exec.Command(filepath.Join(dir, "everything-server"), "-http", "127.0.0.1:"+strconv.Itoa(port), "-stateless=false")
	if err := direct.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = direct.Process.Kill(); _ = direct.Wait() }()
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			c.Close()
			break
		}
		if i > 100 {
			t.Fatal("everything-server did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	want := runConformance(t, in, fmt.Sprintf("http://127.0.0.1:%d/mcp", port))

	b.cli("app", "deploy", "everything", "--dir", dir, "--command", everythingCommand, "--min", "3", "--max", "3")
	b.waitReplicas("everything", 3)
	got := runConformance(t, in, b.info.PublicURL+"/apps/everything/mcp")
	t.Logf("direct:\n%s\nthrough Berth (3 replicas):\n%s", want.text, got.text)
	if !maps.Equal(want.status, got.status) {
		t.Fatalf("results through the gateway differ from the direct ones")
	}
	passed := 0
	for _, s := range got.status {
		if s == "pass" {
			passed++
		}
	}
	t.Logf("%d of %d scenarios pass both ways", passed, len(got.status))
	// The same server as a stdio app: one process per MCP session behind
	// the gateway's bridge.
	b.cli("app", "deploy", "everything-stdio", "--dir", dir, "--command", "./everything-server", "--transport", "stdio", "--min", "1")
	b.waitReplicas("everything-stdio", 1)
	stdio := runConformance(t, in, b.info.PublicURL+"/apps/everything-stdio/mcp")
	t.Logf("through Berth (stdio transport):\n%s", stdio.text)
	if !maps.Equal(want.status, stdio.status) {
		t.Fatalf("stdio results through the gateway differ from the direct ones")
	}
	// The sessions of the suite were spread over the replicas.
	spread := 0
	for _, r := range b.appShow("everything").Replicas {
		if r.Sessions > 0 {
			spread++
		}
	}
	if spread < 2 {
		t.Errorf("all sessions landed on one replica: %+v", b.appShow("everything").Replicas)
	}
}

// TestAppScaleFromZero: at min 0 the app has no replica; the first request
// of a client nobody here wrote (the TypeScript SDK) is held while one
// starts, and succeeds. Idle again, it goes back to zero.
func TestAppScaleFromZero(t *testing.T) {
	in := needInterop(t)
	dir := everythingServer(t)
	b := startBerth(t, "")
	b.cli("app", "deploy", "zero", "--dir", dir, "--command", everythingCommand, "--min", "0", "--scale-down-after", "1s")
	if v := b.appShow("zero"); len(v.Replicas) != 0 {
		t.Fatalf("a min-0 app started with replicas: %+v", v.Replicas)
	}
	out := in.run(t, in.dir, "ts-app-client.mjs", b.info.PublicURL+"/apps/zero/mcp")
	var report struct {
		ConnectMillis int64
		SessionID     string
		Tools         []string
		Call          struct {
			IsError bool
			Text    string
		}
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if report.SessionID == "" || report.Call.IsError || !strings.Contains(report.Call.Text, "simple text") || len(report.Tools) < 10 {
		t.Fatalf("TypeScript client through a cold start: %+v", report)
	}
	t.Logf("first connect through a cold start took %d ms", report.ConnectMillis)

	// A live session (the go-sdk client holds a GET stream open) keeps its
	// replica well past the scale-down delay.
	ctx := context.Background()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: b.info.PublicURL + "/apps/zero/mcp"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := b.waitReplicas("zero", 1).Replicas[0].ID
	time.Sleep(3 * time.Second)
	if v := b.appShow("zero"); len(v.Replicas) != 1 || v.Replicas[0].ID != first {
		t.Fatalf("a replica with a live session was scaled down: %+v", v.Replicas)
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "test_simple_text"}); err != nil {
		t.Fatalf("the live session broke: %v", err)
	}
	cs.Close()
	// The clients ended their sessions: after the scale-down delay, zero again.
	deadline := time.Now().Add(30 * time.Second)
	for len(b.appShow("zero").Replicas) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the app did not scale back to zero: %+v", b.appShow("zero").Replicas)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// A burst at zero: every request is held while a replica starts, and
	// every one succeeds.
	var wg sync.WaitGroup
	errs := make(chan error, 30)
	for i := 0; i < 30; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"burst","version":"1"}}}`
			req, _ := http.NewRequest(http.MethodPost, b.info.PublicURL+"/apps/zero/mcp", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err
				return
			}
			out, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(out), "serverInfo") {
				errs <- fmt.Errorf("HTTP %d %s", resp.StatusCode, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a request of the burst at zero failed: %v", err)
	}
}

// initialize opens an MCP session with a raw request and returns its id and
// the revision that answered.
func initialize(t testing.TB, url string) (sid, rev string) {
	t.Helper()
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}`
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Mcp-Session-Id") == "" {
		t.Fatalf("initialize: %s %s", resp.Status, buf.String())
	}
	// An app reached by path shares the pools' origin: its pages are
	// sandboxed (an opaque origin).
	if csp := resp.Header.Get("Content-Security-Policy"); strings.Contains(url, "/apps/") && !strings.HasPrefix(csp, "sandbox ") {
		t.Fatalf("path-routed app response without the sandbox policy: %q", csp)
	}
	return resp.Header.Get("Mcp-Session-Id"), resp.Header.Get("Berth-Revision")
}

// call sends a request in a session and returns the status and revision.
func call(t testing.TB, url, sid, method string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"jsonrpc":"2.0","id":2,"method":"`+method+`"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Session-Id", sid)
	req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = new(bytes.Buffer).ReadFrom(resp.Body)
	return resp.StatusCode, resp.Header.Get("Berth-Revision")
}

// TestAppTrafficSplitAndLabels: 80/20 between two revisions over 1,000 new
// sessions lands within ±5%, each session stays on its revision, and a
// label URL reaches its revision only.
func TestAppTrafficSplitAndLabels(t *testing.T) {
	dir := everythingServer(t)
	b := startBerth(t, "")
	b.cli("app", "deploy", "split", "--dir", dir, "--command", everythingCommand, "--min", "1", "--revision-suffix", "blue")
	b.cli("app", "deploy", "split", "--dir", dir, "--command", everythingCommand, "--min", "1", "--revision-suffix", "green")
	b.cli("app", "traffic", "split", "--set", "split--blue=80,split--green=20", "--label", "split--green=canary")
	b.waitReplicas("split", 2)
	url := b.info.PublicURL + "/apps/split/mcp"

	counts := map[string]int{}
	sessions := map[string]string{}
	for i := 0; i < 1000; i++ {
		sid, rev := initialize(t, url)
		counts[rev]++
		if i%10 == 0 {
			sessions[sid] = rev
		}
	}
	t.Logf("1000 new sessions: %v", counts)
	if blue := counts["split--blue"]; blue < 750 || blue > 850 || counts["split--blue"]+counts["split--green"] != 1000 {
		t.Fatalf("80/20 split landed as %v", counts)
	}
	for sid, rev := range sessions {
		if code, got := call(t, url, sid, "tools/list"); code != 200 || got != rev {
			t.Fatalf("session %s began on %s, later went to %s (HTTP %d)", sid, rev, got, code)
		}
	}
	for i := 0; i < 20; i++ {
		if _, rev := initialize(t, b.info.PublicURL+"/apps/split---canary/mcp"); rev != "split--green" {
			t.Fatalf("label URL reached %s", rev)
		}
	}
	// Host-based routing too.
	req, _ := http.NewRequest(http.MethodPost, b.info.PublicURL+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}`))
	req.Host = "split---canary.localhost"
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Berth-Revision") != "split--green" {
		t.Fatalf("host-routed label request: %s %s", resp.Status, resp.Header.Get("Berth-Revision"))
	}
	if csp := resp.Header.Get("Content-Security-Policy"); csp != "" {
		t.Fatalf("host-routed app response with a policy it did not set: %q", csp)
	}
	if code, _ := call(t, url, "no-such-session", "tools/list"); code != http.StatusNotFound {
		t.Fatalf("unknown session: HTTP %d", code)
	}
}

// TestAppReplicaKilledMidSession: the client whose replica died gets 404
// and recovers by re-initializing; the replica is restarted; a session on
// the other replica is untouched.
func TestAppReplicaKilledMidSession(t *testing.T) {
	dir := everythingServer(t)
	b := startBerth(t, "")
	b.cli("app", "deploy", "crashy", "--dir", dir, "--command", everythingCommand, "--min", "2", "--max", "2")
	b.waitReplicas("crashy", 2)
	url := b.info.PublicURL + "/apps/crashy/mcp"
	ctx := context.Background()
	connect := func() *mcp.ClientSession {
		cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	a, other := connect(), connect()
	defer other.Close()
	v := b.appShow("crashy")
	if v.Replicas[0].Sessions != 1 || v.Replicas[1].Sessions != 1 {
		t.Fatalf("sessions not spread: %+v", v.Replicas)
	}
	// Kill the app process of the first replica: one of the two sessions
	// lives there.
	first := v.Replicas[0].ID
	killed := killAppProcess(t, first)
	t.Logf("killed pid %d of replica %s", killed, first)

	// One of the two sessions lost its replica: its next request is 404
	// (the go-sdk client reports an error); the other works.
	_, errA := a.CallTool(ctx, &mcp.CallToolParams{Name: "test_simple_text"})
	_, errO := other.CallTool(ctx, &mcp.CallToolParams{Name: "test_simple_text"})
	if (errA == nil) == (errO == nil) {
		t.Fatalf("expected exactly one session to fail: a=%v other=%v", errA, errO)
	}
	lost, kept := a, other
	if errA == nil {
		lost, kept = other, a
	}
	if code, _ := call(t, url, lost.ID(), "tools/list"); code != http.StatusNotFound {
		t.Fatalf("the lost session got HTTP %d, want 404", code)
	}
	lost.Close()
	// The client recovers by initializing again.
	again := connect()
	defer again.Close()
	if _, err := again.CallTool(ctx, &mcp.CallToolParams{Name: "test_simple_text"}); err != nil {
		t.Fatalf("after re-initializing: %v", err)
	}
	if _, err := kept.CallTool(ctx, &mcp.CallToolParams{Name: "test_simple_text"}); err != nil {
		t.Fatalf("the other session was disturbed: %v", err)
	}
	// The dead replica was replaced by a new incarnation.
	v = b.waitReplicas("crashy", 2)
	for _, r := range v.Replicas {
		if r.ID == first {
			t.Fatalf("replica %s was not replaced: %+v", first, v.Replicas)
		}
	}
	if logs := b.cli("app", "logs", "crashy"); !strings.Contains(logs, "restarting") {
		t.Fatalf("logs do not tell of the restart:\n%s", logs)
	}
}

// killAppProcess kills the app's process in a replica's sandbox (found
// through the replica's cgroup) and returns its pid.
func killAppProcess(t *testing.T, replica string) int {
	t.Helper()
	procs, _ := filepath.Glob("/sys/fs/cgroup/pids/berth/*/" + replica + "/cgroup.procs")
	procs2, _ := filepath.Glob("/sys/fs/cgroup/berth/*/" + replica + "/cgroup.procs")
	for _, f := range append(procs, procs2...) {
		b, _ := os.ReadFile(f)
		for _, p := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(p)
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			if strings.HasPrefix(string(comm), "everything") {
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				return pid
			}
		}
	}
	t.Fatalf("no app process found in replica %s", replica)
	return 0
}

// TestAppVolumeLogsAndMetrics deploys the repository's example (the tasks
// server, SQLite on a volume): data survives a new revision, the app's logs
// and per-tool metrics are there.
func TestAppVolumeLogsAndMetrics(t *testing.T) {
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "tasks"), "./examples/tasks")
	build.Dir = testutil.ModuleRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build examples/tasks: %v\n%s", err, out)
	}
	b := startBerth(t, "")
	deploy := func() {
		b.cli("app", "deploy", "tasks", "--dir", dir, "--command", "./tasks --db /data/tasks.db",
			"--volume", "data:/data", "--min", "1", "--probe", "http:/healthz")
	}
	deploy()
	b.waitReplicas("tasks", 1)
	url := b.info.PublicURL + "/apps/tasks/mcp"
	ctx := context.Background()
	connect := func() *mcp.ClientSession {
		cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	cs := connect()
	if r, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "createTask", Arguments: map[string]any{"title": "water the plants"}}); err != nil || r.IsError {
		t.Fatalf("createTask: %v %+v", err, r)
	}
	cs.Close()

	// A new revision, with new replicas, sees the same volume.
	deploy()
	deadline := time.Now().Add(60 * time.Second)
	var replica string // revision 2's replica
	for {
		v := b.appShow("tasks")
		if len(v.Revisions) == 2 && len(v.Replicas) == 1 && v.Replicas[0].Revision == "tasks--r2" && v.Replicas[0].Ready {
			replica = v.Replicas[0].ID
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revision 2 did not take over: %+v", v.Replicas)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cs = connect()
	defer cs.Close()
	r, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "listTasks", Arguments: map[string]any{}})
	if err != nil || r.IsError {
		t.Fatalf("listTasks: %v %+v", err, r)
	}
	if got, _ := json.Marshal(r.StructuredContent); !strings.Contains(string(got), "water the plants") {
		t.Fatalf("the task did not survive the new revision: %s", got)
	}
	schema, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "tasks://schema"})
	if err != nil || len(schema.Contents) == 0 || !strings.Contains(schema.Contents[0].Text, "CREATE TABLE") {
		t.Fatalf("schema resource: %v %+v", err, schema)
	}

	// The access log has a line per request, with the MCP detail.
	b.waitLog(`msg="app request"`, "app=tasks", "revision=tasks--r1", "mcpMethod=tools/call", "tool=createTask", "status=200")
	if logs := b.cli("app", "logs", "tasks"); !strings.Contains(logs, replica+" [stderr]") || !strings.Contains(logs, replica+" [system] replica ready") {
		t.Fatalf("app logs:\n%s", logs)
	}
	resp, err := http.Get(b.info.AdminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var m bytes.Buffer
	_, _ = m.ReadFrom(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`berth_app_requests_total{app="tasks",code="200",method="tools/call",revision="tasks--r1",tool="createTask"} 1`,
		`berth_app_requests_total{app="tasks",code="200",method="tools/call",revision="tasks--r2",tool="listTasks"} 1`,
		`berth_app_request_duration_seconds_count{app="tasks",method="initialize",revision="tasks--r2"} 1`,
	} {
		if !strings.Contains(m.String(), want) {
			t.Fatalf("metrics lack %s:\n%s", want, grepLines(m.String(), "berth_app"))
		}
	}
}

// TestAppApplyAndDelete: berth apply -f creates an app from a Container
// Apps-shaped manifest, makes no new revision when nothing changed, and the
// gateway refuses bodies over its limit; app delete removes the app.
func TestAppApplyAndDelete(t *testing.T) {
	dir := everythingServer(t)
	b := startBerth(t, "")
	manifest := filepath.Join(t.TempDir(), "app.yaml")
	write := func(minReplicas int) {
		y := fmt.Sprintf(`name: declared
properties:
  configuration:
    ingress: {targetPort: 9090, transport: http, path: /mcp}
  template:
    containers:
      - command: ["./everything-server", "-http", "127.0.0.1:$PORT", "-stateless=false"]
        dir: %s
        resources: {cpu: 0.5, memory: 256Mi}
        probes: [{type: readiness, tcpSocket: {}}]
    scale: {minReplicas: %d, maxReplicas: 2, cooldownPeriod: 60}
`, dir, minReplicas)
		if err := os.WriteFile(manifest, []byte(y), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(1)
	if out := b.cli("apply", "-f", manifest); !strings.Contains(out, "revision declared--r1 created") {
		t.Fatalf("first apply:\n%s", out)
	}
	if out := b.cli("apply", "-f", manifest); !strings.Contains(out, "no new revision") {
		t.Fatalf("second apply of the same manifest:\n%s", out)
	}
	write(2)
	b.cli("apply", "-f", manifest)
	v := b.waitReplicas("declared", 2)
	if len(v.Revisions) != 2 || v.Revisions[1].Config.Port != 9090 || v.Revisions[1].Config.Min != 2 || v.Revisions[1].Config.MemoryBytes != 256<<20 {
		t.Fatalf("applied revisions: %+v", v.Revisions)
	}
	url := b.info.PublicURL + "/apps/declared/mcp"
	initialize(t, url)

	resp, err := http.Post(url, "application/json", bytes.NewReader(make([]byte, 17<<20)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("17 MiB body: HTTP %d, want 413", resp.StatusCode)
	}

	// Next to its 2 replicas, the revision keeps a spare sandbox started
	// (the revision it replaced gave its replicas and spare up).
	// (Counted by their cgroups, which are named after them; their
	// directories are not.)
	sandboxes := func() []string {
		abs, _ := filepath.Abs(b.dataDir)
		group := filepath.Join("berth", server.Instance(abs)+"-bwrap", "declared--*")
		v2, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", group))
		v1, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "pids", group))
		return append(v2, v1...)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(sandboxes()) != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("sandboxes of the app: %v, want 2 replicas and a spare", sandboxes())
		}
		time.Sleep(100 * time.Millisecond)
	}

	b.cli("app", "delete", "declared")
	if dirs := sandboxes(); len(dirs) != 0 {
		t.Fatalf("sandboxes left after app delete: %v", dirs)
	}
	if _, errOut, code := b.try("app", "show", "declared"); code != 1 || !strings.Contains(errOut, "not found") {
		t.Fatalf("show after delete: exit %d %s", code, errOut)
	}
	resp, err = http.Post(url, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("request to a deleted app: HTTP %d", resp.StatusCode)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// deleteSession ends an MCP session.
func deleteSession(url, sid string) {
	req, _ := http.NewRequest(http.MethodDelete, url, nil)
	req.Header.Set("Mcp-Session-Id", sid)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
}

// TestAppThatCannotStart: a request to an app whose command exits before it
// is ready is answered 503 as soon as the start fails, with a message that
// says where to look and none of the app's output; the owner finds that
// output in the app's logs.
func TestAppThatCannotStart(t *testing.T) {
	b := startBerth(t, "")
	b.cli("app", "deploy", "broken", "--command", `echo "bad config: SECRET=hunter2" >&2; exit 3`, "--min", "0")
	url := b.info.PublicURL + "/apps/broken/mcp"
	// Well under the gateway's 2-minute wait for a replica: the answer
	// must come from the failed start, not from that timeout.
	c := &http.Client{Timeout: 60 * time.Second}
	for i := 0; i < 2; i++ { // the second waits for the restart after back-off
		resp, err := c.Post(url, "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "berth app logs broken") ||
			strings.Contains(string(body), "hunter2") {
			t.Fatalf("request %d: HTTP %d %s", i, resp.StatusCode, body)
		}
	}
	logs := b.cli("app", "logs", "broken")
	for _, want := range []string{"[stderr] bad config: SECRET=hunter2", "process exited (code 3)", "replica failed: the app exited with code 3"} {
		if !strings.Contains(logs, want) {
			t.Fatalf("app logs lack %q:\n%s", want, logs)
		}
	}
}
