package sandboxtest

// The contract's subtests: what every sandbox of every driver does,
// seen through its agent.

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/sandbox"
)

func testExec(t *testing.T, d Driver, rt Runtime) {
	if rt.Name() == "" {
		t.Error("the runtime has no name")
	}
	sb := Start(t, rt, d.base(t, "exec"))
	if !strings.HasPrefix(sb.ID(), "exec-") {
		t.Errorf("id %q", sb.ID())
	}
	// The shell and Python keep their state from one call to the next.
	want(t, "state", Shell(t, sb, "cd /tmp; export X=41"), "")
	want(t, "state kept", Shell(t, sb, `echo "$PWD $((X+1))"`), "/tmp 42")
	if out := Exec(t, sb, agent.ExecRequest{Language: agent.Python, Code: "x = 41"}); out.Status != agent.StatusSuccess {
		t.Fatalf("python: %+v", out)
	}
	if out := Exec(t, sb, agent.ExecRequest{Language: agent.Python, Code: "x + 1"}); string(out.Value) != "42" {
		t.Errorf("python value %q: %+v", out.Value, out)
	}
	out := Exec(t, sb, agent.ExecRequest{Language: agent.Command, Argv: []string{"cat"}, Stdin: "hello"})
	if out.Stdout != "hello" || out.Status != agent.StatusSuccess {
		t.Errorf("command with stdin: %+v", out)
	}
	if out := Shell(t, sb, "exit 3"); out.ExitCode != 3 || out.Status == agent.StatusSuccess {
		t.Errorf("exit status: %+v", out)
	}
}

func testTimeout(t *testing.T, d Driver, rt Runtime) {
	sb := Start(t, rt, d.base(t, "spin"))
	t0 := time.Now()
	out := Exec(t, sb, agent.ExecRequest{Language: agent.Python, TimeoutMillis: 1000, Code: "while True: pass"})
	if out.Status != agent.StatusTimeout || time.Since(t0) > 10*time.Second {
		t.Fatalf("python: %v %+v", time.Since(t0), out)
	}
	out = Exec(t, sb, agent.ExecRequest{Language: agent.Shell, TimeoutMillis: 1000, Code: "while :; do :; done"})
	if out.Status != agent.StatusTimeout {
		t.Fatalf("shell: %+v", out)
	}
	want(t, "after the timeouts", Shell(t, sb, "echo alive"), "alive")
}

// testFileAPI: the agent's file API works on the workspace.
func testFileAPI(t *testing.T, d Driver, rt Runtime) {
	sb := Start(t, rt, d.base(t, "files"))
	ctx := context.Background()
	if _, err := sb.Agent().Write(ctx, "dir/hello.txt", strings.NewReader("hello from the host")); err != nil {
		t.Fatal(err)
	}
	want(t, "written file", Shell(t, sb, "cat /mnt/data/dir/hello.txt; echo; echo made > made.txt"), "hello from the host")
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
	rc, _, err := sb.Agent().Open(ctx, "made.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b := make([]byte, 64)
	n, _ := rc.Read(b)
	if string(b[:n]) != "made\n" {
		t.Errorf("read %q", b[:n])
	}
}

// testIdentity: code runs as an unprivileged user with no capabilities,
// no new privileges and a system call filter.
func testIdentity(t *testing.T, d Driver, rt Runtime) {
	sb := Start(t, rt, d.base(t, "ident"))
	want(t, "user", Shell(t, sb, "id -u; id -g"), "1000\n1000")
	want(t, "hostname", Shell(t, sb, "hostname"), "sandbox")
	out := Shell(t, sb, "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status")
	wants := []string{"CapEff:\t0000000000000000", "CapBnd:\t0000000000000000", "NoNewPrivs:\t1"}
	if d.Lacks&CodeSeccomp == 0 {
		wants = append(wants, "Seccomp:\t2")
		fails(t, sb, "unshare -r true")
	}
	for _, w := range wants {
		if !strings.Contains(out.Stdout, w) {
			t.Errorf("missing %q in %q", w, out.Stdout)
		}
	}
	checkUIDs(t, rt, sb)
}

// testHostRoot: without an image, the root is read-only and holds nothing
// of the host's users, secrets or home directories.
func testHostRoot(t *testing.T, d Driver, rt Runtime) {
	sb := Start(t, rt, sandbox.Spec{ID: "host"})
	fails(t, sb, "cat /etc/shadow", "ls /root", "ls /home", "ls /var", "ls /etc/ssh", "ls /etc/ssl/private",
		"touch /usr/x", "touch /x", "mkdir /etc/x", "echo x > /.berth/agent")
	want(t, "users", Shell(t, sb, "grep -c . /etc/passwd"), "3")
	if out := Shell(t, sb, "tr '\\0' ' ' < /proc/1/cmdline"); !strings.Contains(out.Stdout, "/.berth/agent agent ") {
		t.Errorf("pid 1: %+v", out)
	}
}

// testWritable: the workspace (the working directory), /tmp and /dev/shm
// are writable.
func testWritable(t *testing.T, d Driver, rt Runtime) {
	sb := Start(t, rt, d.base(t, "rw"))
	want(t, "workspace", Shell(t, sb, "pwd"), "/mnt/data")
	want(t, "writable", Shell(t, sb, "echo a > /mnt/data/a && echo b > /tmp/b && echo c > /dev/shm/c && cat /mnt/data/a /tmp/b /dev/shm/c"), "a\nb\nc")
}

// testDiskLimit: the workspace and /tmp share the sandbox's disk, which is
// bounded, and usable again once freed.
func testDiskLimit(t *testing.T, d Driver, rt Runtime) {
	spec := d.base(t, "disk")
	spec.Limits.DiskBytes = 32 << 20
	sb := Start(t, rt, spec)
	for _, dir := range []string{"/tmp", "/mnt/data"} {
		if out := Shell(t, sb, "head -c 40M /dev/zero > "+dir+"/big"); out.Status == agent.StatusSuccess || !strings.Contains(out.Stderr, "No space left") {
			t.Errorf("%s is not bounded: %+v", dir, out)
		}
		want(t, "freed", Shell(t, sb, "rm "+dir+"/big && head -c 8M /dev/zero > "+dir+"/small && wc -c < "+dir+"/small"), "8388608")
	}
	// Together: 20 + 20 MiB do not fit either.
	if out := Shell(t, sb, "rm /tmp/small /mnt/data/small; head -c 20M /dev/zero > /tmp/x && head -c 20M /dev/zero > /mnt/data/x"); out.Status == agent.StatusSuccess {
		t.Errorf("the workspace and /tmp are bounded apart: %+v", out)
	}
}

func testTmpLimit(t *testing.T, d Driver, rt Runtime) {
	spec := d.base(t, "shm")
	spec.Limits.TmpBytes = 8 << 20
	sb := Start(t, rt, spec)
	if out := Shell(t, sb, "head -c 16M /dev/zero > /dev/shm/big"); out.Status == agent.StatusSuccess || !strings.Contains(out.Stderr, "No space left") {
		t.Errorf("/dev/shm is not bounded: %+v", out)
	}
}

// testMemoryLimit: a process that allocates past the memory limit is
// killed. The sandbox lives on, or (where the driver's own part of it was
// picked, as gVisor's sentry may be) stops and says so through Done.
// Either way the limit holds, and a driver with stats counts the kill.
func testMemoryLimit(t *testing.T, d Driver, rt Runtime) {
	spec := d.base(t, "mem")
	spec.Limits.MemoryBytes = 128 << 20
	sb := Start(t, rt, spec)
	stats := func() (sandbox.Stats, bool) {
		r, ok := sb.(sandbox.StatsReporter)
		if !ok || d.Lacks&Stats != 0 {
			return sandbox.Stats{}, false
		}
		return r.Stats(), true
	}
	out, err := sb.Agent().Exec(context.Background(), agent.ExecRequest{Language: agent.Python, TimeoutMillis: 30000,
		Code: "x = []\nfor i in range(64):\n    x.append(bytearray(16 << 20))\nlen(x)"}, nil)
	if err != nil {
		select {
		case <-sb.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("the agent is gone (%v) but the sandbox runs on", err)
		}
		if s, ok := stats(); ok && s.OOMKills < 1 {
			t.Fatalf("the sandbox stopped without an OOM kill: %v, %+v", err, s)
		}
		t.Logf("the sandbox stopped: %v", err)
		return
	}
	if out.Status != agent.StatusFailure || out.Signal != "killed" || !out.StateReset {
		t.Fatalf("memory bomb: %+v", out)
	}
	if s, ok := stats(); ok && (s.OOMKills < 1 || s.MemoryBytes == 0 || s.MemoryBytes > 128<<20) {
		t.Fatalf("stats %+v", s)
	}
	select {
	case <-sb.Done():
		t.Fatal("the sandbox died")
	default:
	}
	want(t, "after the bomb", Shell(t, sb, "echo alive"), "alive")
}

// testPidsLimit: user code runs under a process limit below the sandbox's
// (sandbox.UserProcs): a fork bomb gets EAGAIN, the agent keeps room to
// kill it at the timeout, threads count too, and the sandbox lives on.
func testPidsLimit(t *testing.T, d Driver, rt Runtime) {
	spec := d.base(t, "pids")
	spec.Limits.Pids = 64
	sb := Start(t, rt, spec)
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
	if rt.Host != nil {
		// Count the bomb's processes from the host while it runs.
		time.Sleep(1500 * time.Millisecond)
		if n := rt.Host.Processes(t, sb); n < 10 || n > 64 {
			t.Errorf("%d processes in the sandbox during the fork bomb", n)
		} else {
			t.Logf("%d processes in the sandbox during the fork bomb", n)
		}
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("the fork bomb took the agent down: %v", r.err)
	}
	out := r.out
	if out.Status != agent.StatusTimeout || !strings.HasPrefix(out.Stderr, strconv.FormatInt(sandbox.UserProcs(64), 10)+"\n") || !strings.Contains(out.Stderr, "fork: retry") {
		t.Fatalf("fork bomb: %+v", out)
	}
	py := Exec(t, sb, agent.ExecRequest{Language: agent.Python, TimeoutMillis: 20000, Code: `
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
	want(t, "after the bomb", Shell(t, sb, "echo alive"), "alive")
	// Another sandbox starts meanwhile, unaffected.
	want(t, "another sandbox", Shell(t, Start(t, rt, d.base(t, "pids2")), "echo fresh"), "fresh")
}

// testStats: a driver with stats measures the sandbox's processes, memory
// and disk.
func testStats(t *testing.T, d Driver, rt Runtime) {
	sb := Start(t, rt, d.base(t, "stats"))
	r, ok := sb.(sandbox.StatsReporter)
	if !ok {
		t.Fatalf("%T is no sandbox.StatsReporter", sb)
	}
	Shell(t, sb, "for i in 1 2 3 4 5; do sleep 30 & done; head -c 4M /dev/urandom > /mnt/data/f")
	s := r.Stats()
	t.Logf("stats: %+v", s)
	if s.Pids < 6 || s.PidsLimit < s.Pids || s.MemoryBytes == 0 || s.CPUTime <= 0 {
		t.Errorf("processes and memory: %+v", s)
	}
	if s.DiskLimitBytes <= 0 || s.DiskBytes < 4<<20 || s.DiskBytes > s.DiskLimitBytes || s.DiskInodesLimit <= 0 || s.DiskFull() {
		t.Errorf("disk: %+v", s)
	}
}

// testVolumes: the sandboxes of a group share its volumes, which outlive
// them until RemoveVolumes; another group's volume of the same name is
// another volume.
func testVolumes(t *testing.T, d Driver, rt Runtime) {
	g, other := "test/vol-"+strings.ToLower(rand.Text()[:6]), "test/other-"+strings.ToLower(rand.Text()[:6])
	t.Cleanup(func() {
		_ = rt.RemoveVolumes(context.Background(), g)
		_ = rt.RemoveVolumes(context.Background(), other)
	})
	spec := func(group string) sandbox.Spec {
		s := d.base(t, "vol")
		s.Group, s.Volumes = group, []sandbox.Volume{{Name: "data", Path: "/data"}, {Name: "cache", Path: "/var/cache/app"}}
		return s
	}
	a, b := Start(t, rt, spec(g)), Start(t, rt, spec(g))
	want(t, "a writes", Shell(t, a, "echo from-a > /data/x && mkdir /data/d && echo c > /var/cache/app/c && cat /data/x"), "from-a")
	want(t, "b shares", Shell(t, b, "cat /data/x /var/cache/app/c && echo from-b >> /data/x && echo y > /data/d/y"), "from-a\nc")
	want(t, "a sees b's", Shell(t, a, "cat /data/x /data/d/y"), "from-a\nfrom-b\ny")
	want(t, "another group's", Shell(t, Start(t, rt, spec(other)), "ls -A /data | wc -l"), "0")
	ctx := context.Background()
	_ = a.Destroy(ctx)
	_ = b.Destroy(ctx)
	want(t, "kept", Shell(t, Start(t, rt, spec(g)), "cat /data/x"), "from-a\nfrom-b")
	if err := rt.RemoveVolumes(ctx, g); err != nil {
		t.Fatal(err)
	}
	want(t, "removed", Shell(t, Start(t, rt, spec(g)), "ls -A /data | wc -l"), "0")
	if err := rt.RemoveVolumes(ctx, "test/none"); err != nil {
		t.Errorf("removing no volumes: %v", err)
	}
}

// testFiles: the caller's files are there to read at their target, not
// to write, and the caller's tree is not changed but for its owner.
func testFiles(t *testing.T, d Driver, rt Runtime) {
	dir, err := os.MkdirTemp("", "berth-files-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{"f": 0o600, "sub/run.sh": 0o700} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\necho from berth\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	spec := d.base(t, "files")
	spec.Group = "test/files-" + strings.ToLower(rand.Text()[:6])
	spec.Files = []sandbox.Files{{Dir: dir, Target: "/opt/berth-files"}}
	a, b := Start(t, rt, spec), Start(t, rt, spec)
	want(t, "read", Shell(t, a, "tail -1 /opt/berth-files/f; /opt/berth-files/sub/run.sh"), "echo from berth\nfrom berth")
	want(t, "shared by the group", Shell(t, b, "tail -1 /opt/berth-files/f"), "echo from berth")
	fails(t, a, "touch /opt/berth-files/new", "echo x >> /opt/berth-files/f", "rm /opt/berth-files/f")
	if got, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || !strings.HasSuffix(string(got), "echo from berth\n") {
		t.Errorf("the caller's file: %q %v", got, err)
	}
}

// testHostile: the basics a hostile program tries fail.
func testHostile(t *testing.T, d Driver, rt Runtime) {
	sb := Start(t, rt, d.base(t, "hostile"))
	want(t, "no setuid", Shell(t, sb, "python3 -c 'import os; os.setuid(0)' 2>/dev/null; echo $?"), "1")
	if d.Lacks&CodeSeccomp == 0 {
		want(t, "no namespaces", Shell(t, sb, "unshare -U true 2>/dev/null && echo allowed || echo denied; unshare -m true 2>/dev/null && echo allowed || echo denied"), "denied\ndenied")
	}
	want(t, "no mount", Shell(t, sb, "python3 -c 'import ctypes; l = ctypes.CDLL(None, use_errno=True); print(l.mount(b\"none\", b\"/tmp\", b\"tmpfs\", 0, None), ctypes.get_errno() != 0)'"), "-1 True")
	want(t, "own processes only", Shell(t, sb, "[ $(ls /proc | grep -c '^[0-9]') -lt 12 ] && echo few"), "few")
	if d.Lacks&LoopbackOnly == 0 {
		want(t, "no network but loopback", Shell(t, sb, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"), "lo")
	}
}

// testDestroy: Destroy stops the sandbox, closes Done, may be called
// again, and leaves nothing behind.
func testDestroy(t *testing.T, d Driver, rt Runtime) {
	sb := Start(t, rt, d.base(t, "gone"))
	ctx := context.Background()
	if rt.Host != nil && len(rt.Host.Leftovers(t, sb)) == 0 {
		t.Fatal("the Host hook sees nothing of a running sandbox")
	}
	t0 := time.Now()
	if err := sb.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("destroy took %v", time.Since(t0))
	select {
	case <-sb.Done():
	default:
		t.Fatal("Done not closed")
	}
	if err := sb.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sb.Agent().Ping(ctx); err == nil {
		t.Error("the agent answers after Destroy")
	}
	gone(t, needHost(t, rt), sb)
}

// testDies: a sandbox killed from outside is reported by Done; Destroy
// still cleans up after it.
func testDies(t *testing.T, d Driver, rt Runtime) {
	h := needHost(t, rt)
	sb := Start(t, rt, d.base(t, "dies"))
	h.Kill(t, sb)
	select {
	case <-sb.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed after the sandbox died")
	}
	if err := sb.Agent().Ping(context.Background()); !errors.Is(err, agent.ErrUnavailable) {
		t.Fatalf("ping: %v", err)
	}
	if err := sb.Destroy(context.Background()); err != nil {
		t.Fatal(err)
	}
	gone(t, h, sb)
}

// testCleanupLive: a fresh runtime's Cleanup removes the live sandboxes
// of another runtime on the same state (what a restarted server finds).
func testCleanupLive(t *testing.T, d Driver, rt Runtime) {
	if rt.Reopen == nil {
		t.Skip("no Reopen hook")
	}
	sb := Start(t, rt, d.base(t, "live"))
	if err := rt.Reopen(t).Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sb.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the sandbox survived Cleanup")
	}
	if rt.Host != nil {
		gone(t, rt.Host, sb)
	}
	if err := sb.Destroy(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// checkUIDs checks sb's host uids where the driver has a Host hook.
func checkUIDs(t *testing.T, rt Runtime, sb sandbox.Sandbox) {
	t.Helper()
	if rt.Host == nil {
		t.Log("host uids not checked: no Host hook")
		return
	}
	rt.Host.CheckUIDs(t, sb)
}
