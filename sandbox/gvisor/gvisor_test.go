package gvisor_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
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

// suiteRuntime is newRuntime for the conformance suite, with the hooks
// that look at it from the host.
func suiteRuntime(tb testing.TB) sandboxtest.Runtime {
	rt, o := newRuntime(tb)
	return sandboxtest.Runtime{
		Runtime: rt,
		Host: sandboxtest.LocalHost{Driver: "gvisor", Instance: o.Instance, StateDir: o.StateDir,
			AlsoGone: func(tb testing.TB, sb sandbox.Sandbox) { runscGone(tb, o) }},
		Reopen: func(tb testing.TB) sandbox.Runtime {
			rt, err := gvisor.New(o)
			if err != nil {
				tb.Fatal(err)
			}
			return rt
		},
	}
}

// TestConformance runs the drivers' conformance suite: gVisor can do
// everything it checks.
func TestConformance(t *testing.T) {
	sandboxtest.Run(t, sandboxtest.Driver{New: suiteRuntime, Network: sandboxtest.LocalNetwork{}})
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

// TestKernel: the sandbox's code runs on gVisor's kernel, which says it
// is Linux 4.4.0 whatever the host runs.
func TestKernel(t *testing.T) {
	rt, _ := newRuntime(t)
	sb := start(t, rt, sandbox.Spec{ID: "kernel"})
	host, err := exec.Command("uname", "-r").Output()
	if err != nil {
		t.Fatal(err)
	}
	out := sandboxtest.Shell(t, sb, "uname -r")
	if out.Status != agent.StatusSuccess || out.Stdout == string(host) {
		t.Fatalf("not in gVisor? %+v", out)
	}
}

// TestHostUIDs: the host sees the sandbox's files owned by the sandbox's
// own unprivileged uid, and the sentry and the gofer do not run as root.
func TestHostUIDs(t *testing.T) {
	rt, o := newRuntime(t)
	sb := start(t, rt, sandbox.Spec{ID: "iso"})
	sandboxtest.Shell(t, sb, "echo hi > /mnt/data/a")
	info, err := os.Stat(filepath.Join(sandboxDir(o, "iso"), "disk", "data", "a"))
	if err != nil {
		t.Fatal(err)
	}
	st := info.Sys().(*syscall.Stat_t)
	if st.Uid < 1_000_000 || st.Gid != st.Uid {
		t.Errorf("workspace file owned by %d:%d on the host", st.Uid, st.Gid)
	}
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
	runscGone(t, o)
}

// runscGone fails the test if runsc keeps a container in o's state.
func runscGone(tb testing.TB, o gvisor.Options) {
	tb.Helper()
	out, err := exec.Command(o.Runsc, "--root", filepath.Join(o.StateDir, "runsc-root"), "list", "--quiet").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		tb.Errorf("runsc list: %q %v", out, err)
	}
	if l := listDir(filepath.Join(o.StateDir, "runsc-root")); len(l) > 0 && !(len(l) == 1 && l[0] == "null-netns") {
		tb.Errorf("runsc state left: %v", l)
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
