package sandboxtest

// The hooks of the local drivers (bwrap, gvisor): their sandboxes seen
// from the host they run on. Nothing here is part of the contract's
// assertions; a remote driver brings hooks of its own, or none.

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/internal/local"
)

// LocalHost is the Host of a local driver: each sandbox has a cgroup
// named after its ID under berth/INSTANCE-DRIVER, and its files under
// StateDir.
type LocalHost struct {
	Driver, Instance, StateDir string
	// HostProcesses is set when the sandbox's processes are the host's
	// (not a user-space kernel's, as gVisor's are).
	HostProcesses bool
	// AlsoGone, if set, checks what else of a sandbox must be gone.
	AlsoGone func(tb testing.TB, sb sandbox.Sandbox)
}

var _ Host = LocalHost{}

// CheckUIDs fails the test if any host process of sb runs as host root, as
// uid 1000 (a real user on many hosts) or as an image uid's shifted id.
func (h LocalHost) CheckUIDs(tb testing.TB, sb sandbox.Sandbox) {
	tb.Helper()
	uids := h.UIDs(tb, sb)
	if len(uids) == 0 {
		tb.Fatalf("no host process found in sandbox %s's cgroup", sb.ID())
	}
	for u := range uids {
		if u == 0 || u == 1000 || u >= sandbox.ImageIDShift {
			tb.Errorf("a process of sandbox %s runs as host uid %d", sb.ID(), u)
		}
	}
}

// UIDs implements Host.
func (h LocalHost) UIDs(tb testing.TB, sb sandbox.Sandbox) map[uint32]bool {
	uids := map[uint32]bool{}
	for _, pid := range hostPids(sb) {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join("/proc", pid), &st); err == nil {
			uids[st.Uid] = true
		}
	}
	return uids
}

// Kill implements Host: it kills every process in sb's cgroup.
func (h LocalHost) Kill(tb testing.TB, sb sandbox.Sandbox) {
	tb.Helper()
	killed := 0
	for range 20 {
		pids := hostPids(sb)
		if len(pids) == 0 {
			break
		}
		for _, p := range pids {
			pid, _ := strconv.Atoi(p)
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				killed++
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if killed == 0 {
		tb.Fatalf("no process of sandbox %s to kill", sb.ID())
	}
}

// Gone implements Host.
func (h LocalHost) Gone(tb testing.TB, sb sandbox.Sandbox) {
	tb.Helper()
	if p := hostPids(sb); len(p) > 0 {
		tb.Errorf("processes left: %v", p)
	}
	cg, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", "berth", h.Instance+"-"+h.Driver, sb.ID()))
	cg2, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "berth", h.Instance+"-"+h.Driver, sb.ID()))
	if len(cg)+len(cg2) > 0 {
		tb.Errorf("cgroups left: %v %v", cg, cg2)
	}
	dirs, _ := filepath.Glob(filepath.Join(h.StateDir, "sb-*"))
	if len(dirs) > 0 {
		tb.Errorf("sandbox directories left: %v", dirs)
	}
	// Its disk: neither its mount nor its loop device outlives it.
	for _, m := range local.MountsUnder(h.StateDir) {
		if strings.HasPrefix(m, filepath.Join(h.StateDir, "sb-")) {
			tb.Errorf("mount left: %s", m)
		}
	}
	if l := local.LoopDevicesUnder(h.StateDir); len(l) > 0 {
		tb.Errorf("loop devices left: %v", l)
	}
	if h.AlsoGone != nil {
		h.AlsoGone(tb, sb)
	}
}

// ProcessLimits implements Host.
func (h LocalHost) ProcessLimits(tb testing.TB, sb sandbox.Sandbox, cmdline string) (string, bool) {
	if !h.HostProcesses {
		return "", false
	}
	for _, pid := range hostPids(sb) {
		cmd, _ := os.ReadFile(filepath.Join("/proc", pid, "cmdline"))
		if strings.HasPrefix(string(cmd), cmdline) {
			b, _ := os.ReadFile(filepath.Join("/proc", pid, "limits"))
			return string(b), true
		}
	}
	return "", true
}

// hostPids are the host processes in sb's cgroup (named after it).
func hostPids(sb sandbox.Sandbox) []string {
	var pids []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cg, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
		if err == nil && inCgroup(string(cg), sb.ID()) {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

func inCgroup(cgroups, id string) bool {
	for _, line := range strings.Split(cgroups, "\n") {
		if strings.HasSuffix(line, "/"+id) {
			return true
		}
	}
	return false
}

// LocalNetwork is the Network of a local driver's host: the outside is a
// network namespace of the test's own, routed by the host, and the host's
// own addresses are forbidden.
type LocalNetwork struct{}

var outsides atomic.Int32

// Outside implements Network: a server in a namespace on a /30 of
// 198.51.100.0/24 (TEST-NET-2) of this process's own, routed by the host.
func (LocalNetwork) Outside(tb testing.TB) string {
	tb.Helper()
	n := int(outsides.Add(1))
	name := fmt.Sprintf("bxt%d-%d", os.Getpid()%100000, n)
	hostIf, extIf := fmt.Sprintf("bx%dh%d", os.Getpid()%100000, n), fmt.Sprintf("bx%de%d", os.Getpid()%100000, n)
	net4 := 4 * (1 + (os.Getpid()*8+n)%62)
	hostAddr, extAddr := fmt.Sprintf("198.51.100.%d", net4+1), fmt.Sprintf("198.51.100.%d", net4+2)
	ip := func(args ...string) {
		tb.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			tb.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	tb.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", hostIf).Run()
		_ = exec.Command("ip", "netns", "del", name).Run()
	})
	ip("netns", "add", name)
	ip("link", "add", hostIf, "type", "veth", "peer", "name", extIf)
	ip("link", "set", extIf, "netns", name)
	ip("addr", "add", hostAddr+"/30", "dev", hostIf)
	ip("link", "set", hostIf, "up")
	ip("-n", name, "addr", "add", extAddr+"/30", "dev", extIf)
	ip("-n", name, "link", "set", extIf, "up")
	ip("-n", name, "route", "add", "default", "via", hostAddr)
	srv := exec.Command("ip", "netns", "exec", name, "python3", "-c", fmt.Sprintf(`
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((%q, 8080)); s.listen()
print("listening", flush=True)
while True:
    c, addr = s.accept()
    c.sendall(("hello " + addr[0] + "\n").encode()); c.close()
`, extAddr))
	stdout, _ := srv.StdoutPipe()
	if err := srv.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "listening\n" {
		tb.Fatalf("outside server: %q %v", line, err)
	}
	return net.JoinHostPort(extAddr, "8080")
}

// Forbidden implements Network: a listener on every address of the host,
// reached at each of them.
func (LocalNetwork) Forbidden(tb testing.TB) []string {
	tb.Helper()
	ln, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("hello host\n"))
			c.Close()
		}
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		tb.Fatal(err)
	}
	out := []string{net.JoinHostPort("127.0.0.1", port)}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() {
			out = append(out, net.JoinHostPort(ipn.IP.String(), port))
		}
	}
	return out
}
