package sandboxtest

// The subtests on image roots (sandbox.Root).

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/sandbox"
)

func testImageScratch(t *testing.T, d Driver, rt Runtime) {
	root := ScratchRoot(t)
	before := treeState(t, root.Dir)
	if _, err := os.Lstat("/data"); err == nil {
		t.Skip("the host has a /data: the test could not tell whether the sandbox made it")
	}
	defer func() {
		if _, err := os.Lstat("/data"); err == nil {
			t.Error("starting a sandbox on an image whose /mnt links to / made the host's /data")
		}
	}()
	sb := Start(t, rt, sandbox.Spec{ID: "scratch", Root: root})
	// No shell, no libraries: the agent (static) runs, and so does its
	// file API.
	ctx := context.Background()
	if err := sb.Agent().Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Agent().Write(ctx, "hello.txt", strings.NewReader("hi")); err != nil {
		t.Fatal(err)
	}
	list, err := sb.Agent().List(ctx, "")
	if err != nil || len(list) != 1 || list[0].Name != "hello.txt" {
		t.Fatalf("workspace: %v %+v", err, list)
	}
	// Its static program runs, with no shell to start it, as a command
	// and as a service.
	out := Exec(t, sb, agent.ExecRequest{Language: agent.Command, Argv: []string{"/app/berth", "version"}})
	if out.ExitCode != 0 || !strings.HasPrefix(out.Stdout, "berth ") {
		t.Fatalf("a static program in a scratch image: %+v", out)
	}
	checkScratchService(t, rt, sb)
	checkUIDs(t, rt, sb)
	if err := sb.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	if after := treeState(t, root.Dir); after != before {
		t.Fatalf("the shared image root changed:\n%s\n---\n%s", before, after)
	}
}

// checkScratchService runs a long-lived program of a scratch image as a
// service and checks (where its processes are the host's) that it runs
// under the sandbox's process limit, which no shell applied.
func checkScratchService(t *testing.T, rt Runtime, sb sandbox.Sandbox) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	spec := agent.ServiceSpec{ID: "probe", Argv: []string{"/app/berth", "agent", "--socket", "/tmp/probe.sock", "--workspace", "/tmp/probe", "--private", "/tmp/probe-private"}}
	if err := sb.Agent().StartService(ctx, spec); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sb.Agent().StopService(ctx, "probe", time.Second) }()
	if rt.Host == nil {
		t.Log("the service's process limit not checked: no Host hook")
		return
	}
	want := fmt.Sprintf("Max processes %d", sandbox.UserProcs(256))
	var limits string
	for range 400 {
		// (Not the agent that is about to become it.)
		l, ok := rt.Host.ProcessLimits(t, sb, "/app/berth\x00agent\x00--socket\x00/tmp/probe.sock")
		if !ok {
			return // its processes are not the host's
		}
		if limits = l; limits != "" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(strings.Join(strings.Fields(limits), " "), want) {
		t.Fatalf("the service's limits, want %q:\n%s", want, limits)
	}
}

func testImageDebian(t *testing.T, d Driver, rt Runtime) {
	root := DebianRoot(t)
	sb := Start(t, rt, sandbox.Spec{ID: "debian", Root: root})
	want(t, "user", Shell(t, sb, "id -un; id -u; id -g"), "app\n1000\n1000")
	want(t, "hostname", Shell(t, sb, "cat /etc/hostname; hostname"), "sandbox\nsandbox")
	want(t, "image's own files", Shell(t, sb, "grep -c '^app:' /etc/passwd; cat /etc/debian_version | cut -d. -f1"), "1\n12")
	// The image user's files are its own; root's are not.
	want(t, "owned file writable", Shell(t, sb, "echo more >> /home/app/owned && cat /home/app/owned && stat -c %U /home/app/owned"), "image file\nmore\napp")
	want(t, "home writable", Shell(t, sb, "mkdir -p /home/app/.cache/x && echo ok > /home/app/.cache/x/f && cat /home/app/.cache/x/f"), "ok")
	want(t, "root's files", Shell(t, sb, "touch /etc/x 2>/dev/null && echo writable || echo denied; touch /usr/bin/x 2>/dev/null && echo writable || echo denied"), "denied\ndenied")
	want(t, "tmp and workspace", Shell(t, sb, "echo a > /tmp/a && echo b > /mnt/data/b && cat /tmp/a /mnt/data/b && pwd"), "a\nb\n/mnt/data")
	// A setuid-root binary of the image gives nothing.
	want(t, "setuid", Shell(t, sb, "ls -l /usr/local/bin/suid-id | cut -c1-4; /usr/local/bin/suid-id -u"), "-rws\n1000")
	want(t, "no capabilities", Shell(t, sb, "grep CapEff /proc/self/status"), "CapEff:\t0000000000000000")
	// The shell and Python keep their state.
	want(t, "state", Shell(t, sb, "cd /home/app; export X=1"), "")
	want(t, "state kept", Shell(t, sb, "echo $PWD $X"), "/home/app 1")
	if py := Exec(t, sb, agent.ExecRequest{Language: agent.Python, Code: "import os\nx = os.getuid()"}); py.ExitCode != 0 {
		t.Errorf("python: %+v", py)
	}
	py := Exec(t, sb, agent.ExecRequest{Language: agent.Python, Code: "x + 1"})
	if py.ExitCode != 0 || string(py.Result.Value) != "1001" {
		t.Errorf("python: %+v (%s)", py, py.Result.Value)
	}
	checkUIDs(t, rt, sb)
}

func testImageHostile(t *testing.T, d Driver, rt Runtime) {
	root := DebianRoot(t)
	sb := Start(t, rt, sandbox.Spec{ID: "hostile", Root: root})
	want(t, "no network but loopback", Shell(t, sb, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"), "lo")
	want(t, "no setuid", Shell(t, sb, "python3 -c 'import os; os.setuid(0)' 2>/dev/null; echo $?"), "1")
	// The system call filter (and --disable-userns) hold on an image too.
	want(t, "no namespaces", Shell(t, sb, "unshare -U true 2>/dev/null && echo allowed || echo denied; unshare -m true 2>/dev/null && echo allowed || echo denied"), "denied\ndenied")
	want(t, "no mount", Shell(t, sb, "python3 -c 'import ctypes; l = ctypes.CDLL(None, use_errno=True); print(l.mount(b\"none\", b\"/tmp\", b\"tmpfs\", 0, None), ctypes.get_errno() != 0)'"), "-1 True")
	want(t, "own processes only", Shell(t, sb, "[ $(ls /proc | grep -c '^[0-9]') -lt 12 ] && echo few"), "few")
	// Nothing tells the sandbox where its image lives on the host.
	out := Shell(t, sb, "cat /proc/1/cmdline /proc/self/mountinfo /proc/self/environ | tr '\\0' ' '")
	if strings.Contains(out.Stdout, root.Dir) {
		t.Errorf("the sandbox sees its image's host path %s:\n%s", root.Dir, out.Stdout)
	}
	// Writes to the root stay in the sandbox's disk.
	want(t, "root write", Shell(t, sb, "echo x > /home/app/hostile && cat /home/app/hostile"), "x")
	if _, err := os.Stat(filepath.Join(root.Dir, "home/app/hostile")); err == nil {
		t.Error("a write to the sandbox's root reached the shared image")
	}
}

func testImageFilesAndEgress(t *testing.T, d Driver, rt Runtime) {
	// The caller's files, private to it.
	src, err := os.MkdirTemp("", "berth-sandboxtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(src) })
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("from the host\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sb := Start(t, rt, sandbox.Spec{ID: "files", Root: DebianRoot(t), Egress: true,
		Files: []sandbox.Files{{Dir: src, Target: "/opt/berth-files"}}})
	// A mount point the image does not have is made for it.
	want(t, "files", Shell(t, sb, "cat /opt/berth-files/f"), "from the host")
	// With egress, the sandbox has an interface and a resolver.
	want(t, "interface", Shell(t, sb, "tail -n +3 /proc/net/dev | grep -vc '^ *lo:'"), "1")
	want(t, "resolver", Shell(t, sb, "grep -q nameserver /etc/resolv.conf && echo yes"), "yes")
}

// An image whose user is root (no USER): root inside, with no
// capabilities, owning the image's root-owned files, and nobody on the host.
func testImageRootUser(t *testing.T, d Driver, rt Runtime) {
	root := *DebianRoot(t)
	root.UID, root.GID = 0, 0
	sb := Start(t, rt, sandbox.Spec{ID: "rootuser", Root: &root})
	want(t, "user", Shell(t, sb, "id -u; id -g"), "0\n0")
	want(t, "root's files", Shell(t, sb, "echo x > /etc/berth-x && cat /etc/berth-x && stat -c %U /etc/passwd"), "x\nroot")
	want(t, "no capabilities", Shell(t, sb, "grep CapEff /proc/self/status"), "CapEff:\t0000000000000000")
	want(t, "app's files", Shell(t, sb, "echo y >> /home/app/owned 2>/dev/null && echo writable || echo denied"), "denied")
	checkUIDs(t, rt, sb)
	if _, err := os.Stat(filepath.Join(root.Dir, "etc/berth-x")); err == nil {
		t.Error("a write to the sandbox's root reached the shared image")
	}
}

func testImageIsolation(t *testing.T, d Driver, rt Runtime) {
	root := DebianRoot(t)
	before := treeState(t, filepath.Join(root.Dir, "home"))
	a := Start(t, rt, sandbox.Spec{ID: "iso-a", Root: root})
	b := Start(t, rt, sandbox.Spec{ID: "iso-b", Root: root})
	want(t, "a writes", Shell(t, a, "echo secret-a > /home/app/mine && echo a >> /home/app/owned && cat /home/app/mine"), "secret-a")
	want(t, "b sees none of it", Shell(t, b, "cat /home/app/mine 2>&1 >/dev/null | wc -l; cat /home/app/owned"), "1\nimage file")
	want(t, "b writes", Shell(t, b, "echo secret-b > /home/app/mine; cat /home/app/mine"), "secret-b")
	want(t, "a keeps its own", Shell(t, a, "cat /home/app/mine"), "secret-a")
	if rt.Host != nil {
		ua, ub := rt.Host.UIDs(t, a), rt.Host.UIDs(t, b)
		for u := range ua {
			if ub[u] {
				t.Errorf("sandboxes a and b share host uid %d", u)
			}
		}
	}
	if after := treeState(t, filepath.Join(root.Dir, "home")); after != before {
		t.Fatalf("the shared image root changed:\n%s\n---\n%s", before, after)
	}
}

func testImageDiskQuota(t *testing.T, d Driver, rt Runtime) {
	root := DebianRoot(t)
	sb := Start(t, rt, sandbox.Spec{ID: "quota", Root: root, Limits: sandbox.Limits{DiskBytes: 32 << 20}})
	// Writes to the root land on the sandbox's own disk, within its size.
	out := Shell(t, sb, "dd if=/dev/zero of=/home/app/big bs=1M count=64 2>&1")
	if !strings.Contains(out.Stdout, "No space left") {
		t.Fatalf("a 64 MiB write to the root of a 32 MiB sandbox: %+v", out)
	}
}

func testImageBadRoot(t *testing.T, d Driver, rt Runtime) {
	for _, r := range []*sandbox.Root{
		{Dir: "relative/path", IDShift: sandbox.ImageIDShift},
		{Dir: "/nonexistent-berth-root", IDShift: sandbox.ImageIDShift},
		{Dir: "/tmp", IDShift: sandbox.ImageIDShift, UID: 1 << 20},
	} {
		sb, err := rt.Start(context.Background(), sandbox.Spec{ID: "bad-" + strings.ToLower(rand.Text()[:6]), Root: r})
		if err == nil {
			_ = sb.Destroy(context.Background())
			t.Errorf("root %+v: started", r)
		}
	}
}
