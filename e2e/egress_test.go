package e2e

import (
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// fakeInternet makes a network namespace of the test's own with a TCP
// server at 198.18.0.2 (a benchmarking range, not one Berth blocks), routed
// from the host through a veth pair, standing in for the outside world.
func fakeInternet(t *testing.T) (addr string) {
	t.Helper()
	testutil := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ns, hostIf := "berth-e2e-inet", "be2einet"
	_ = exec.Command("ip", "netns", "del", ns).Run()
	_ = exec.Command("ip", "link", "del", hostIf).Run()
	testutil("ip", "netns", "add", ns)
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", hostIf).Run()
		_ = exec.Command("ip", "netns", "del", ns).Run()
	})
	testutil("ip", "link", "add", hostIf, "type", "veth", "peer", "name", hostIf+"p")
	testutil("ip", "link", "set", hostIf+"p", "netns", ns)
	testutil("ip", "addr", "add", "198.18.0.1/30", "dev", hostIf)
	testutil("ip", "link", "set", hostIf, "up")
	testutil("ip", "-n", ns, "addr", "add", "198.18.0.2/30", "dev", hostIf+"p")
	testutil("ip", "-n", ns, "link", "set", hostIf+"p", "up")
	testutil("ip", "-n", ns, "link", "set", "lo", "up")
	testutil("ip", "-n", ns, "route", "add", "default", "via", "198.18.0.1")
	srv := exec.Command("ip", "netns", "exec", ns, "python3", "-c", `
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.18.0.2", 8099)); s.listen(16)
while True:
    c, a = s.accept(); c.sendall(b"HELLO-FROM-OUTSIDE " + a[0].encode() + b"\n"); c.close()
`)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for exec.Command("ip", "netns", "exec", ns, "python3", "-c", "import socket; socket.create_connection(('198.18.0.2', 8099), timeout=1)").Run() != nil {
		if time.Now().After(deadline) {
			t.Fatal("fake internet server did not start")
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "198.18.0.2:8099"
}

func TestEgress(t *testing.T) {
	b := startBerth(t, "")
	outside := fakeInternet(t)
	host, port, _ := net.SplitHostPort(outside)
	// A service on the host that an egress-enabled sandbox must still not
	// reach: listening on every host address, including the sandbox's
	// gateway (the host end of its veth).
	hostPort := hostService(t, "0.0.0.0:0", "HOST-SERVICE")

	probe := fmt.Sprintf(`python3 - <<'EOF'
import socket, subprocess
def try_(addr, port):
    try:
        s = socket.create_connection((addr, port), timeout=2)
        return "open:" + s.recv(100).decode().strip()
    except OSError as e:
        return "closed:" + type(e).__name__
gw = subprocess.run(["ip", "-4", "route", "show", "default"], capture_output=True, text=True).stdout.split()
gw = gw[2] if len(gw) > 2 else "none"
print("outside", try_(%q, %s))
print("gateway", gw, try_(gw, %d) if gw != "none" else "no-gateway")
print("loopback", try_("127.0.0.1", %d))
EOF`, host, port, hostPort, hostPort)

	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			on := b.createPool("egress-on-"+rt, "--runtime", rt, "--egress", "enabled", "--ready", "0")
			off := b.createPool("egress-off-"+rt, "--runtime", rt, "--ready", "0")

			r := b.execute("egress-on-"+rt, on, "net-1", probe)
			if !strings.Contains(r.Stdout, "outside open:HELLO-FROM-OUTSIDE") {
				t.Fatalf("egress-enabled sandbox cannot reach the outside: %+v", r)
			}
			if strings.Contains(r.Stdout, "HOST-SERVICE") {
				t.Fatalf("egress-enabled sandbox reached a host service: %q", r.Stdout)
			}
			if !strings.Contains(r.Stdout, "gateway 100.") || !strings.Contains(r.Stdout, "loopback closed") {
				t.Fatalf("unexpected probe output: %+v", r)
			}

			r = b.execute("egress-off-"+rt, off, "net-2", probe)
			if strings.Contains(r.Stdout, "open:") || !strings.Contains(r.Stdout, "outside closed") {
				t.Fatalf("egress-disabled sandbox reached something: %+v", r)
			}
		})
	}
}
