package gvisor_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/internal/testutil"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/gvisor"
	"github.com/berth-dev/berth/sandbox/internal/local"
	"github.com/berth-dev/berth/sandbox/sandboxtest"
)

// runscPath is the repository's static runsc (.bin/runsc) if it was built,
// else runsc on $PATH; the test fails without one.
func runscPath(tb testing.TB) string {
	tb.Helper()
	if p := filepath.Join(testutil.ModuleRoot(), ".bin", "runsc"); fileExists(p) {
		return p
	}
	return testutil.RequireTool(tb, "runsc")
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func options(tb testing.TB, instance, stateDir string) gvisor.Options {
	agentPath := os.Getenv("BERTH_TEST_AGENT")
	if agentPath == "" {
		agentPath = testutil.BerthBinary(tb)
	}
	return gvisor.Options{
		Options: local.Options{Instance: instance, StateDir: stateDir, AgentPath: agentPath},
		Runsc:   runscPath(tb),
	}
}

func instanceName(tb testing.TB) string {
	return "g" + strings.ToLower(strings.ReplaceAll(tb.Name(), "/", "-"))
}

func newRuntime(tb testing.TB) (*gvisor.Runtime, gvisor.Options) {
	testutil.RequireRoot(tb)
	o := options(tb, instanceName(tb), tb.TempDir())
	rt, err := gvisor.New(o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := rt.Cleanup(context.Background()); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
	})
	return rt, o
}

func start(tb testing.TB, rt *gvisor.Runtime, spec sandbox.Spec) sandbox.Sandbox {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sb, err := rt.Start(ctx, spec)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = sb.Destroy(context.Background()) })
	return sb
}

func TestUnavailable(t *testing.T) {
	_, err := gvisor.New(gvisor.Options{Runsc: "/nonexistent/runsc"})
	if !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(err.Error(), "install") {
		t.Fatalf("got %v, want ErrUnavailable saying how to install runsc", err)
	}
	// A dynamically linked runsc (a cgo build) cannot boot sandboxes.
	_, err = gvisor.New(gvisor.Options{Runsc: "/bin/sh"})
	if !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Fatalf("got %v, want ErrUnavailable for a dynamic binary", err)
	}
}

func TestSmoke(t *testing.T) {
	rt, _ := newRuntime(t)
	if rt.Name() != "gvisor" {
		t.Fatalf("name %q", rt.Name())
	}
	sb := start(t, rt, sandbox.Spec{ID: "smoke"})
	if sb.ID() != "smoke" {
		t.Fatalf("id %q", sb.ID())
	}
	// gVisor's kernel says it is Linux 4.4.0, whatever the host runs.
	host, err := exec.Command("uname", "-r").Output()
	if err != nil {
		t.Fatal(err)
	}
	out := sandboxtest.Shell(t, sb, "cd /tmp; export X=41; uname -r")
	if out.Status != agent.StatusSuccess || out.Stdout == string(host) {
		t.Fatalf("not in gVisor? %+v", out)
	}
	out = sandboxtest.Shell(t, sb, `echo "$PWD $((X+1))"`)
	if strings.TrimSpace(out.Stdout) != "/tmp 42" {
		t.Fatalf("shell state lost: %+v", out)
	}
	out = sandboxtest.Exec(t, sb, agent.ExecRequest{Language: agent.Python, Code: "x = 41"})
	if out.Status != agent.StatusSuccess {
		t.Fatalf("%+v", out)
	}
	out = sandboxtest.Exec(t, sb, agent.ExecRequest{Language: agent.Python, Code: "x + 1"})
	if string(out.Value) != "42" {
		t.Fatalf("python value %q: %+v", out.Value, out)
	}
	out = sandboxtest.Exec(t, sb, agent.ExecRequest{Language: agent.Command, Argv: []string{"cat"}, Stdin: "hello"})
	if out.Stdout != "hello" || out.Status != agent.StatusSuccess {
		t.Fatalf("%+v", out)
	}
}

func TestIsolation(t *testing.T) {
	rt, o := newRuntime(t)
	sb := start(t, rt, sandbox.Spec{ID: "iso", Limits: sandbox.Limits{TmpBytes: 8 << 20, DiskBytes: 32 << 20}})
	out := sandboxtest.Shell(t, sb, "id -u; id -g; grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status")
	for _, want := range []string{"1000\n1000\n", "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000", "NoNewPrivs:\t1", "Seccomp:\t2"} {
		if !strings.Contains(out.Stdout, want) {
			t.Errorf("missing %q in %q", want, out.Stdout)
		}
	}
	// Nothing of the host's users, secrets or home directories, and the
	// root file system is read-only.
	for _, code := range []string{
		"cat /etc/shadow", "ls /root", "ls /home", "ls /var", "ls /etc/ssh", "ls /etc/ssl/private",
		"touch /usr/x", "touch /x", "mkdir /etc/x", "echo x > /.berth/agent",
	} {
		if out := sandboxtest.Shell(t, sb, code); out.Status == agent.StatusSuccess {
			t.Errorf("%q succeeded: %+v", code, out)
		}
	}
	if out := sandboxtest.Shell(t, sb, "tr '\\0' ' ' < /proc/1/cmdline; ps -e | wc -l"); !strings.HasPrefix(out.Stdout, "/.berth/agent agent ") {
		t.Errorf("pid 1: %+v", out)
	}
	if out := sandboxtest.Shell(t, sb, "grep -c . /etc/passwd; unshare -r true"); strings.TrimSpace(strings.Split(out.Stdout, "\n")[0]) != "3" || out.Status == agent.StatusSuccess {
		t.Errorf("passwd or unshare: %+v", out)
	}
	// The workspace, /tmp and /dev/shm are writable; /tmp and the
	// workspace share the sandbox's disk, which is bounded.
	out = sandboxtest.Shell(t, sb, "echo hi > /mnt/data/a && echo hi > /tmp/b && echo hi > /dev/shm/c && cat /mnt/data/a /tmp/b /dev/shm/c")
	if out.Stdout != "hi\nhi\nhi\n" {
		t.Fatalf("%+v", out)
	}
	if out := sandboxtest.Shell(t, sb, "head -c 40M /dev/zero > /tmp/big"); out.Status == agent.StatusSuccess || !strings.Contains(out.Stderr, "No space left") {
		t.Errorf("/tmp is not bounded: %+v", out)
	}
	if out := sandboxtest.Shell(t, sb, "rm /tmp/big; head -c 16M /dev/zero > /dev/shm/big"); out.Status == agent.StatusSuccess || !strings.Contains(out.Stderr, "No space left") {
		t.Errorf("/dev/shm is not bounded: %+v", out)
	}
	// The host sees the sandbox's files owned by the sandbox's own
	// unprivileged uid, neither root nor a host user.
	dir := sandboxDir(o, "iso")
	info, err := os.Stat(filepath.Join(dir, "disk", "data", "a"))
	if err != nil {
		t.Fatal(err)
	}
	st := info.Sys().(*syscall.Stat_t)
	if st.Uid < 1_000_000 || st.Gid != st.Uid {
		t.Errorf("workspace file owned by %d:%d on the host", st.Uid, st.Gid)
	}
	// The sentry and the gofer do not run as root on the host either.
	procs := processesWith(o.StateDir)
	if len(procs) < 3 {
		t.Errorf("expected runsc, its sandbox and gofer, found %v", procs)
	}
	for _, pid := range procs {
		if !strings.HasPrefix(cmdline(pid), "runsc-") {
			continue // the runsc command itself, a root process outside
		}
		if uid := procUID(t, pid); uid == 0 {
			t.Errorf("process %d (%s) runs as root", pid, cmdline(pid))
		}
	}
}

func TestFiles(t *testing.T) {
	rt, _ := newRuntime(t)
	sb := start(t, rt, sandbox.Spec{ID: "files"})
	ctx := context.Background()
	if _, err := sb.Agent().Write(ctx, "dir/hello.txt", strings.NewReader("hello from the host")); err != nil {
		t.Fatal(err)
	}
	out := sandboxtest.Shell(t, sb, "cat /mnt/data/dir/hello.txt; echo made > made.txt")
	if out.Stdout != "hello from the host" {
		t.Fatalf("%+v", out)
	}
	list, err := sb.Agent().List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range list {
		names[f.Name] = true
	}
	if !names["dir"] || !names["made.txt"] {
		t.Fatalf("list: %+v", list)
	}
	list, err = sb.Agent().List(ctx, "dir")
	if err != nil || len(list) != 1 || filepath.Base(list[0].Name) != "hello.txt" || list[0].Size != 19 {
		t.Fatalf("list dir: %+v %v", list, err)
	}
}

// A process that allocates past the memory limit is killed by the host's
// OOM killer. It usually picks the systrap stub that maps the process's
// memory, and the sentry, the agent and the sandbox survive; it may pick
// the sentry, and then the whole sandbox stops (the pool reports that as
// out of memory too). Either way the limit holds and the kill is counted.
func TestMemoryLimit(t *testing.T) {
	rt, _ := newRuntime(t)
	sb := start(t, rt, sandbox.Spec{ID: "mem", Limits: sandbox.Limits{MemoryBytes: 128 << 20}})
	out, err := sb.Agent().Exec(context.Background(), agent.ExecRequest{Language: agent.Python, TimeoutMillis: 30000,
		Code: "x = []\nfor i in range(64):\n    x.append(bytearray(16 << 20))\nlen(x)"}, nil)
	if err != nil {
		select {
		case <-sb.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("the agent is gone (%v) but the sandbox runs on", err)
		}
		if s := sb.(sandbox.StatsReporter).Stats(); s.OOMKills < 1 {
			t.Fatalf("the sandbox stopped without an OOM kill: %v, %+v", err, s)
		}
		t.Logf("the OOM killer picked the sentry: the sandbox stopped")
		return
	}
	t.Logf("memory bomb: %+v", out.Result)
	if out.Status != agent.StatusFailure || out.Signal != "killed" || !out.StateReset {
		t.Fatalf("memory bomb: %+v", out)
	}
	if s := sb.(sandbox.StatsReporter).Stats(); s.OOMKills < 1 || s.MemoryBytes == 0 || s.MemoryBytes > 128<<20 {
		t.Fatalf("stats %+v", s)
	}
	select {
	case <-sb.Done():
		t.Fatal("the sandbox died")
	default:
	}
	if out := sandboxtest.Shell(t, sb, "echo alive"); out.Stdout != "alive\n" {
		t.Fatalf("%+v", out)
	}
}

// The sandbox's pids limit is RLIMIT_NPROC inside the sentry, and user code
// runs under a lower one (sandbox.UserProcs): a fork bomb gets EAGAIN and
// stays below it, the agent keeps room to act and kills it at the timeout,
// and the sandbox lives on.
func TestPidsLimit(t *testing.T) {
	rt, o := newRuntime(t)
	sb := start(t, rt, sandbox.Spec{ID: "pids", Limits: sandbox.Limits{Pids: 64}})
	type result struct {
		out *agent.Output
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := sb.Agent().Exec(context.Background(), agent.ExecRequest{Language: agent.Shell, TimeoutMillis: 3000,
			Code: "ulimit -u >&2; :(){ :|:& };:; sleep 10"}, nil)
		done <- result{out, err}
	}()
	// Count the bomb's processes from the host while it runs.
	time.Sleep(1500 * time.Millisecond)
	ps, psErr := exec.Command(o.Runsc, "--root", filepath.Join(o.StateDir, "runsc-root"), "ps", "pids").CombinedOutput()
	r := <-done
	if r.err != nil {
		t.Fatalf("the fork bomb took the agent down: %v", r.err)
	}
	{
		if psErr != nil {
			t.Fatalf("runsc ps: %v: %s", psErr, ps)
		}
		n := len(strings.Split(strings.TrimSpace(string(ps)), "\n")) - 1
		if n < 10 || n > 64 {
			t.Fatalf("%d processes in the sandbox during the fork bomb", n)
		}
		if r.out.Status != agent.StatusTimeout || !strings.HasPrefix(r.out.Stderr, strconv.FormatInt(sandbox.UserProcs(64), 10)+"\n") || !strings.Contains(r.out.Stderr, "fork: retry") {
			t.Fatalf("fork bomb: %+v", r.out)
		}
		t.Logf("processes during the fork bomb: %d; after: %s", n, sandboxtest.Shell(t, sb, "ps -e | wc -l").Stdout)
		// Threads count too.
		py := sandboxtest.Exec(t, sb, agent.ExecRequest{Language: agent.Python, TimeoutMillis: 20000, Code: `
import threading
ev = threading.Event()
n = 0
try:
    for i in range(1000):
        threading.Thread(target=ev.wait).start()
        n += 1
except RuntimeError:
    pass
ev.set()
n`})
		if n, _ := strconv.Atoi(string(py.Value)); n < 10 || n >= int(sandbox.UserProcs(64)) {
			t.Fatalf("threads: %+v", py)
		}
		if out := sandboxtest.Shell(t, sb, "echo alive"); out.Stdout != "alive\n" {
			t.Fatalf("after the bomb: %+v", out)
		}
	}
	sb2 := start(t, rt, sandbox.Spec{ID: "pids2"})
	if out := sandboxtest.Shell(t, sb2, "echo fresh"); out.Stdout != "fresh\n" {
		t.Fatalf("new sandbox: %+v", out)
	}
}

func TestTimeout(t *testing.T) {
	rt, _ := newRuntime(t)
	sb := start(t, rt, sandbox.Spec{ID: "spin"})
	t0 := time.Now()
	out := sandboxtest.Exec(t, sb, agent.ExecRequest{Language: agent.Python, TimeoutMillis: 1000, Code: "while True: pass"})
	if out.Status != agent.StatusTimeout || time.Since(t0) > 10*time.Second {
		t.Fatalf("%v %+v", time.Since(t0), out)
	}
	out = sandboxtest.Exec(t, sb, agent.ExecRequest{Language: agent.Shell, TimeoutMillis: 1000, Code: "while :; do :; done"})
	if out.Status != agent.StatusTimeout {
		t.Fatalf("%+v", out)
	}
}

// pyConnect is Python that tries a TCP connection and prints "connected"
// or the error.
func pyConnect(host string, port int) string {
	return fmt.Sprintf(`
import socket
s = socket.socket()
s.settimeout(1)
try:
    s.connect((%q, %d))
    print("connected")
except Exception as e:
    print("error", e)
`, host, port)
}

func TestNoNetwork(t *testing.T) {
	rt, _ := newRuntime(t)
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	sb := start(t, rt, sandbox.Spec{ID: "nonet"})
	for _, host := range append([]string{"127.0.0.1"}, hostAddrs(t)...) {
		out := sandboxtest.Exec(t, sb, agent.ExecRequest{Language: agent.Python, Code: pyConnect(host, port)})
		if !strings.HasPrefix(out.Stdout, "error") {
			t.Errorf("%s:%d: %+v", host, port, out)
		}
	}
	// Only loopback exists, and it is the sandbox's own.
	out := sandboxtest.Shell(t, sb, "cat /proc/net/dev")
	if strings.Contains(out.Stdout, "eth") {
		t.Errorf("interfaces: %s", out.Stdout)
	}
	out = sandboxtest.Exec(t, sb, agent.ExecRequest{Language: agent.Python, Code: `
import socket
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
c = socket.create_connection(srv.getsockname()); c.close()
"ok"`})
	if string(out.Value) != `"ok"` {
		t.Errorf("loopback: %+v", out)
	}
}

// TestEgress runs a server in a namespace that stands for the internet
// (198.51.100.0/24, routed by the host) and checks that a sandbox with
// egress reaches it through NAT, but not the host itself.
func TestEgress(t *testing.T) {
	rt, _ := newRuntime(t)
	ext := fmt.Sprintf("bgxt%d", os.Getpid()%100000)
	hostIf, extIf := ext+"h", ext+"e"
	ipCmd := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", hostIf).Run()
		_ = exec.Command("ip", "netns", "del", ext).Run()
	})
	ipCmd("netns", "add", ext)
	ipCmd("link", "add", hostIf, "type", "veth", "peer", "name", extIf)
	ipCmd("link", "set", extIf, "netns", ext)
	ipCmd("addr", "add", "198.51.100.1/24", "dev", hostIf)
	ipCmd("link", "set", hostIf, "up")
	ipCmd("-n", ext, "addr", "add", "198.51.100.2/24", "dev", extIf)
	ipCmd("-n", ext, "link", "set", extIf, "up")
	ipCmd("-n", ext, "route", "add", "default", "via", "198.51.100.1")
	srv := exec.Command("ip", "netns", "exec", ext, "/usr/bin/python3", "-c", `
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.51.100.2", 8080)); s.listen()
print("listening", flush=True)
while True:
    c, addr = s.accept()
    c.sendall(("hello " + addr[0] + "\n").encode()); c.close()
`)
	stdout, _ := srv.StdoutPipe()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "listening\n" {
		t.Fatalf("server: %q %v", line, err)
	}
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	hostPort := ln.Addr().(*net.TCPAddr).Port

	sb := start(t, rt, sandbox.Spec{ID: "egress", Egress: true})
	out := sandboxtest.Exec(t, sb, agent.ExecRequest{Language: agent.Python, Code: `
import socket
c = socket.create_connection(("198.51.100.2", 8080), timeout=5)
c.recv(100).decode().strip()`})
	if string(out.Value) != `"hello 198.51.100.1"` {
		t.Fatalf("egress (want the host's masqueraded address): %+v", out)
	}
	for _, host := range append([]string{"127.0.0.1", "198.51.100.1"}, hostAddrs(t)...) {
		out := sandboxtest.Exec(t, sb, agent.ExecRequest{Language: agent.Python, Code: pyConnect(host, hostPort)})
		if !strings.HasPrefix(out.Stdout, "error") {
			t.Errorf("reached the host at %s:%d: %+v", host, hostPort, out)
		}
	}
}

func TestDestroy(t *testing.T) {
	rt, o := newRuntime(t)
	sb := start(t, rt, sandbox.Spec{ID: "gone"})
	dir := sandboxDir(o, "gone")
	if len(processesWith(o.StateDir)) == 0 || len(cgroupDirs(instanceName(t), "gone")) == 0 {
		t.Fatal("no processes or cgroups for a running sandbox?")
	}
	t0 := time.Now()
	if err := sb.Destroy(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Logf("destroy took %v", time.Since(t0))
	select {
	case <-sb.Done():
	default:
		t.Fatal("Done not closed")
	}
	if err := sb.Destroy(context.Background()); err != nil {
		t.Fatal(err)
	}
	assertGone(t, o, "gone", dir)
}

// A sandbox whose sentry dies is reported by Done, and Destroy still
// cleans up after it.
func TestDiesOnItsOwn(t *testing.T) {
	rt, o := newRuntime(t)
	sb := start(t, rt, sandbox.Spec{ID: "dies"})
	dir := sandboxDir(o, "dies")
	killed := 0
	for _, pid := range processesWith(dir) {
		if strings.HasPrefix(cmdline(pid), "runsc-sandbox ") {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed++
		}
	}
	if killed != 1 {
		t.Fatalf("killed %d sentries", killed)
	}
	select {
	case <-sb.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed after the sentry died")
	}
	if err := sb.Agent().Ping(context.Background()); !errors.Is(err, agent.ErrUnavailable) {
		t.Fatalf("ping: %v", err)
	}
	if err := sb.Destroy(context.Background()); err != nil {
		t.Fatal(err)
	}
	assertGone(t, o, "dies", dir)
}

// A fresh runtime's Cleanup removes the live sandboxes of another runtime
// with the same options (what a restarted server finds).
func TestCleanupLive(t *testing.T) {
	rt, o := newRuntime(t)
	sb := start(t, rt, sandbox.Spec{ID: "live"})
	rt2, err := gvisor.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := rt2.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sb.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the sandbox survived Cleanup")
	}
	assertGone(t, o, "live", sandboxDir(o, "live"))
	if err := sb.Destroy(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestCleanupAfterCrash starts a sandbox in a child process, kills that
// process, and checks that a fresh runtime's Cleanup removes what it left.
func TestCleanupAfterCrash(t *testing.T) {
	testutil.RequireRoot(t)
	state := t.TempDir()
	o := options(t, instanceName(t), state)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.v")
	// The helper's own temporary files (its image root) go where this
	// test removes them: the helper never gets to.
	tmp := t.TempDir()
	cmd.Env = append(os.Environ(), "BERTH_GVISOR_CRASH_STATE="+state, "BERTH_GVISOR_CRASH_INSTANCE="+o.Instance,
		"BERTH_TEST_AGENT="+o.AgentPath, "TMPDIR="+tmp)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	started := false
	for sc.Scan() {
		if sc.Text() == "STARTED" {
			started = true
			break
		}
	}
	if !started {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal("the helper did not start its sandbox")
	}
	_ = cmd.Process.Kill() // the crash
	_ = cmd.Wait()

	rt, err := gvisor.New(o)
	if err != nil {
		t.Fatal(err)
	}
	dir := sandboxDir(o, "crashed")
	if !fileExists(dir) || len(cgroupDirs(o.Instance, "crashed")) == 0 {
		t.Fatal("the crash left nothing behind?")
	}
	t.Logf("left behind: processes %v, state %v", processesWith(state), listDir(filepath.Join(state, "runsc-root")))
	if err := rt.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	assertGone(t, o, "crashed", dir)
	assertGone(t, o, "crashed-img", sandboxDir(o, "crashed-img"))
	// And the runtime works afterwards.
	sb := start(t, rt, sandbox.Spec{ID: "crashed"})
	if out := sandboxtest.Shell(t, sb, "echo ok"); out.Stdout != "ok\n" {
		t.Fatalf("%+v", out)
	}
	_ = sb.Destroy(context.Background())
	if err := rt.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if m := local.MountsUnder(state); len(m) > 0 {
		t.Fatalf("mounts left: %v", m)
	}
}

// TestCrashHelper is the process that crashes for TestCleanupAfterCrash.
func TestCrashHelper(t *testing.T) {
	state := os.Getenv("BERTH_GVISOR_CRASH_STATE")
	if state == "" {
		t.Skip("helper for TestCleanupAfterCrash")
	}
	rt, err := gvisor.New(options(t, os.Getenv("BERTH_GVISOR_CRASH_INSTANCE"), state))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Start(context.Background(), sandbox.Spec{ID: "crashed"}); err != nil {
		t.Fatal(err)
	}
	// One on an image too: its overlay, over its disk, must go as well.
	if _, err := rt.Start(context.Background(), sandbox.Spec{ID: "crashed-img", Root: sandboxtest.ScratchRoot(t)}); err != nil {
		t.Fatal(err)
	}
	fmt.Println("STARTED")
	time.Sleep(time.Minute)
}

func assertGone(t *testing.T, o gvisor.Options, id, dir string) {
	t.Helper()
	if fileExists(dir) {
		t.Errorf("sandbox directory %s is left", dir)
	}
	if p := processesWith(o.StateDir); len(p) > 0 {
		for _, pid := range p {
			t.Errorf("process %d left: %s", pid, cmdline(pid))
		}
	}
	if d := cgroupDirs(o.Instance, id); len(d) > 0 {
		t.Errorf("cgroups left: %v", d)
	}
	// Its disk: neither its mount nor its loop device outlives it.
	if m := local.MountsUnder(dir); len(m) > 0 {
		t.Errorf("mounts left: %v", m)
	}
	if l := local.LoopDevicesUnder(o.StateDir); len(l) > 0 {
		t.Errorf("loop devices left: %v", l)
	}
	out, err := exec.Command(o.Runsc, "--root", filepath.Join(o.StateDir, "runsc-root"), "list", "--quiet").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("runsc list: %q %v", out, err)
	}
	if l := listDir(filepath.Join(o.StateDir, "runsc-root")); len(l) > 0 && !(len(l) == 1 && l[0] == "null-netns") {
		t.Errorf("runsc state left: %v", l)
	}
}

// sandboxDir is where the driver keeps a sandbox (local.Host.SandboxDir).
func sandboxDir(o gvisor.Options, id string) string {
	return filepath.Join(o.StateDir, "sb-"+id)
}

// processesWith lists the processes whose command line mentions s.
func processesWith(s string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if strings.Contains(cmdline(pid), s) {
			out = append(out, pid)
		}
	}
	return out
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.ReplaceAll(string(b), "\x00", " ")
}

func procUID(t *testing.T, pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
			uid, _ := strconv.Atoi(f[1])
			return uid
		}
	}
	return -1
}

// cgroupDirs lists a sandbox's groups in every hierarchy.
func cgroupDirs(instance, id string) []string {
	m, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", "berth", instance+"-gvisor", id))
	m2, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "berth", instance+"-gvisor", id))
	return append(m, m2...)
}

func listDir(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// hostAddrs are the host's own non-loopback IPv4 addresses.
func hostAddrs(t *testing.T) []string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() {
			out = append(out, ipn.IP.String())
		}
	}
	return out
}

// BenchmarkColdStart measures Start+Destroy of a sandbox (its agent
// answering in between).
func BenchmarkColdStart(b *testing.B) {
	rt, _ := newRuntime(b)
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		sb, err := rt.Start(ctx, sandbox.Spec{ID: fmt.Sprintf("cold%d", i)})
		if err != nil {
			b.Fatal(err)
		}
		_ = sb.Destroy(ctx)
	}
}

// BenchmarkBareRunsc measures runsc alone, to compare with the cold start:
// "do" runs /bin/true with the host's root file system; "run" runs it from
// a minimal bundle (/usr read-only, no user namespace, no cgroup).
func BenchmarkBareRunsc(b *testing.B) {
	testutil.RequireRoot(b)
	runsc := runscPath(b)
	root := b.TempDir()
	b.Cleanup(func() {
		for _, m := range local.MountsUnder(root) {
			_ = syscall.Unmount(m, syscall.MNT_DETACH)
		}
	})
	b.Run("do", func(b *testing.B) {
		for b.Loop() {
			out, err := exec.Command(runsc, "--root", root, "--network", "none", "do", "/bin/true").CombinedOutput()
			if err != nil {
				b.Fatalf("%v: %s", err, out)
			}
		}
	})
	b.Run("run", func(b *testing.B) {
		bundle := b.TempDir()
		rootfs := filepath.Join(bundle, "rootfs")
		for _, d := range []string{"usr", "proc", "dev"} {
			if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
				b.Fatal(err)
			}
		}
		for _, l := range []string{"bin", "lib", "lib64"} {
			if err := os.Symlink("usr/"+l, filepath.Join(rootfs, l)); err != nil {
				b.Fatal(err)
			}
		}
		config := `{"ociVersion":"1.0.2","process":{"user":{"uid":1000,"gid":1000},"args":["/bin/true"],"cwd":"/",
"env":["PATH=/usr/bin:/bin"],"noNewPrivileges":true},"root":{"path":"rootfs","readonly":true},
"mounts":[{"destination":"/proc","type":"proc","source":"proc"},{"destination":"/dev","type":"tmpfs","source":"tmpfs"},
{"destination":"/usr","type":"bind","source":"/usr","options":["rbind","ro"]}],
"linux":{"namespaces":[{"type":"pid"},{"type":"ipc"},{"type":"uts"},{"type":"mount"},{"type":"network"}]}}`
		if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(config), 0o644); err != nil {
			b.Fatal(err)
		}
		for i := 0; b.Loop(); i++ {
			out, err := exec.Command(runsc, "--root", root, "--network", "none", "run", "--bundle", bundle, fmt.Sprintf("bare%d", i)).CombinedOutput()
			if err != nil {
				b.Fatalf("%v: %s", err, out)
			}
		}
	})
}

// BenchmarkExec measures one round trip to the agent: a command run in
// the sandbox.
func BenchmarkExec(b *testing.B) {
	rt, _ := newRuntime(b)
	sb := start(b, rt, sandbox.Spec{ID: "exec"})
	ctx := context.Background()
	b.Run("ping", func(b *testing.B) {
		for b.Loop() {
			if err := sb.Agent().Ping(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("command", func(b *testing.B) {
		for b.Loop() {
			if _, err := sb.Agent().Exec(ctx, agent.ExecRequest{Language: agent.Command, Argv: []string{"/bin/true"}}, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("shell", func(b *testing.B) {
		for b.Loop() {
			if _, err := sb.Agent().Exec(ctx, agent.ExecRequest{Language: agent.Shell, Code: "true"}, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestConformance(t *testing.T) {
	rt, _ := newRuntime(t)
	sandboxtest.Run(t, rt)
}

// BenchmarkWarmStart compares a warm start on the host's root with one on
// an image root (Debian with Python).
func BenchmarkWarmStart(b *testing.B) {
	rt, _ := newRuntime(b)
	b.Run("host", func(b *testing.B) { sandboxtest.BenchStart(b, rt, nil) })
	b.Run("image", func(b *testing.B) { sandboxtest.BenchStart(b, rt, sandboxtest.DebianRoot(b)) })
}

// BenchmarkShared measures 10 sandboxes on one image root.
func BenchmarkShared(b *testing.B) {
	rt, _ := newRuntime(b)
	sandboxtest.BenchShared(b, rt, sandboxtest.DebianRoot(b), 10)
}
