package sandboxtest

// The network subtests: egress off and on, and ports reached through the
// agent.

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/sandbox"
)

// pyConnect is Python that tries a TCP connection to addr (host:port) and
// prints "connected" or the error.
func pyConnect(addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	return fmt.Sprintf(`
import socket
s = socket.socket()
s.settimeout(2)
try:
    s.connect((%q, %s))
    print("connected", end=" ", flush=True)
    print(s.recv(100).decode().strip())
except Exception as e:
    print("error", e)
`, host, port)
}

// unreachable fails the test if sb reaches any of addrs.
func unreachable(t *testing.T, sb sandbox.Sandbox, addrs ...string) {
	t.Helper()
	for _, a := range addrs {
		out := Exec(t, sb, agent.ExecRequest{Language: agent.Python, Code: pyConnect(a)})
		if !strings.HasPrefix(out.Stdout, "error") {
			t.Errorf("reached %s: %+v", a, out)
		}
	}
}

// testNoEgress: without egress a sandbox has loopback only, its own, and
// reaches nothing else.
func testNoEgress(t *testing.T, d Driver, rt Runtime) {
	var addrs []string
	if d.Network != nil {
		addrs = append(d.Network.Forbidden(t), d.Network.Outside(t))
	} else {
		t.Log("no Network: only the interfaces checked")
	}
	sb := Start(t, rt, d.base(t, "nonet"))
	if d.Lacks&LoopbackOnly == 0 {
		want(t, "interfaces", Shell(t, sb, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"), "lo")
	} else if d.Network == nil {
		t.Log("the driver has an interface without egress, and no Network: only loopback checked here (the driver's own tests check what it refuses)")
	}
	unreachable(t, sb, addrs...)
	out := Exec(t, sb, agent.ExecRequest{Language: agent.Python, Code: `
import socket
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
c = socket.create_connection(srv.getsockname()); c.close()
"ok"`})
	if string(out.Value) != `"ok"` {
		t.Errorf("loopback: %+v", out)
	}
}

// testEgress: with egress a sandbox reaches the outside, never its host.
func testEgress(t *testing.T, d Driver, rt Runtime) {
	if d.Network == nil {
		t.Skip("no Network to reach")
	}
	outside, forbidden := d.Network.Outside(t), d.Network.Forbidden(t)
	spec := d.base(t, "egress")
	spec.Egress = true
	sb := Start(t, rt, spec)
	out := Exec(t, sb, agent.ExecRequest{Language: agent.Python, Code: pyConnect(outside)})
	if !strings.HasPrefix(out.Stdout, "connected hello ") {
		t.Fatalf("egress to %s: %+v", outside, out)
	}
	unreachable(t, sb, forbidden...)
}

// testPorts: a port a program listens on inside the sandbox is reached
// through the agent (DialPort), egress or not; a closed one is refused.
func testPorts(t *testing.T, d Driver, rt Runtime) {
	sb := Start(t, rt, d.base(t, "ports"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := sb.Agent().StartService(ctx, agent.ServiceSpec{ID: "srv", Command: `exec python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 8123)); s.listen()
while True:
    c, _ = s.accept(); c.sendall(c.recv(100).upper()); c.close()
'`})
	if err != nil {
		t.Fatal(err)
	}
	var conn net.Conn
	for conn == nil && ctx.Err() == nil {
		if conn, err = sb.Agent().DialPort(ctx, 8123); err != nil {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if conn == nil {
		t.Fatalf("dial port 8123: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(conn).ReadString('\n'); err != nil || line != "PING\n" {
		t.Fatalf("through the port: %q %v", line, err)
	}
	if c, err := sb.Agent().DialPort(ctx, 8124); err == nil {
		// The agent may accept before it connects: a refused port then
		// reads as closed at once.
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 1)); n > 0 || err == nil {
			t.Errorf("port 8124 (closed) answered")
		}
		c.Close()
	}
}
