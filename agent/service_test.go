package agent_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/agent"
)

// startAgent serves an agent on a temporary socket (outside any sandbox:
// these tests are about the protocol, the sandbox tests about isolation).
func startAgent(t *testing.T) *agent.Client {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	ln, err := agent.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = agent.Serve(ctx, ln, agent.Options{Workspace: filepath.Join(dir, "ws"), Private: filepath.Join(dir, "priv")}, nil)
	}()
	t.Cleanup(func() { cancel(); <-done })
	c := agent.UnixClient(sock)
	t.Cleanup(c.Close)
	return c
}

func TestServiceTunnelAndLogs(t *testing.T) {
	c := startAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	err := c.StartService(ctx, agent.ServiceSpec{ID: "web", Env: map[string]string{"PORT": fmt.Sprint(port)},
		Command: `echo starting on $PORT; exec python3 -c "
import http.server, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = ('hello ' + self.path).encode()
        self.send_response(200); self.send_header('Content-Length', str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): print('request', self.path, file=sys.stderr, flush=True)
http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()"`})
	if err != nil {
		t.Fatal(err)
	}
	// Through the tunnel, with a real HTTP client and connection reuse.
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return c.DialPort(ctx, port)
	}}}
	var body []byte
	for i := 0; ; i++ {
		resp, err := hc.Get("http://app/x?y=1")
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			break
		}
		if i > 100 {
			t.Fatalf("app never answered: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if string(body) != "hello /x?y=1" {
		t.Fatalf("body %q", body)
	}
	var lines []string
	if err := c.ServiceLogs(ctx, "web", false, func(l agent.LogLine) { lines = append(lines, l.Stream+": "+l.Line) }); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(lines, "\n"); !strings.Contains(got, "stdout: starting on") || !strings.Contains(got, "stderr: request /x?y=1") {
		t.Fatalf("logs:\n%s", got)
	}
	if _, err := c.DialPort(ctx, 1); err == nil {
		t.Fatal("dial to a closed port succeeded")
	}
	if err := c.StopService(ctx, "web", time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestServiceStdioAttachAndExit(t *testing.T) {
	c := startAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.StartService(ctx, agent.ServiceSpec{ID: "echo", Stdio: true, Command: "echo to-logs >&2; exec cat"}); err != nil {
		t.Fatal(err)
	}
	conn, err := c.Attach(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Attach(ctx, "echo"); err == nil {
		t.Fatal("a second attach was allowed")
	}
	fmt.Fprintln(conn, `{"jsonrpc":"2.0","id":1,"method":"ping"}`)
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || line != `{"jsonrpc":"2.0","id":1,"method":"ping"}`+"\n" {
		t.Fatalf("echo through stdio: %q %v", line, err)
	}
	conn.(interface{ CloseWrite() error }).CloseWrite() // EOF on stdin: cat exits
	exit, err := c.WaitService(ctx, "echo")
	if err != nil || exit.ExitCode != 0 {
		t.Fatalf("exit %+v %v", exit, err)
	}
}
