package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// buildBinary builds the server into a temporary directory (with -race when
// the tests run with it).
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tasks")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// binEnv is the environment of the server processes. A race-enabled binary
// would otherwise sleep a second on exit; a race it detects still makes it
// exit non-zero, which the tests check.
func binEnv(extra ...string) []string {
	return append(append(os.Environ(), "GORACE=atexit_sleep_ms=0"), extra...)
}

// startStdio runs the binary as a stdio server on db (passed in $TASKS_DB).
func startStdio(t *testing.T, ctx context.Context, bin, db string) (*mcp.ClientSession, *exec.Cmd) {
	t.Helper()
	cmd := exec.Command(bin, "--transport", "stdio", "--log-level", "debug")
	cmd.Env = binEnv("TASKS_DB=" + db)
	cmd.Stderr = t.Output()
	cs, err := newClient().Connect(ctx, &mcp.CommandTransport{Command: cmd, TerminateDuration: 5 * time.Second}, nil)
	if err != nil {
		t.Fatalf("connect to %s over stdio: %v", bin, err)
	}
	return cs, cmd
}

// stopStdio hangs up, which must make the server exit cleanly.
func stopStdio(t *testing.T, cs *mcp.ClientSession, cmd *exec.Cmd) {
	t.Helper()
	if err := cs.Close(); err != nil {
		t.Errorf("closing stdio session: %v", err)
	}
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 0 {
		t.Errorf("stdio server exit: %v", cmd.ProcessState)
	}
}

type httpProcess struct {
	cmd    *exec.Cmd
	url    string
	stderr strings.Builder
	mu     sync.Mutex
	done   chan struct{} // closed when stderr reaches EOF
}

var listenRE = regexp.MustCompile(`msg=listening addr=(\S+)`)

// startHTTPBinary runs the binary as an HTTP server on a free loopback port
// and waits until /healthz answers.
func startHTTPBinary(t *testing.T, bin, db string) *httpProcess {
	t.Helper()
	p := &httpProcess{done: make(chan struct{})}
	p.cmd = exec.Command(bin, "--db", db, "--addr", "127.0.0.1:0", "--log-level", "debug")
	p.cmd.Env = binEnv()
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // in case the test failed before stopping it
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			<-p.done
			p.cmd.Wait()
		}
	})
	addr := make(chan string, 1)
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.stderr.WriteString(line + "\n")
			p.mu.Unlock()
			if m := listenRE.FindStringSubmatch(line); m != nil {
				addr <- m[1]
			}
		}
	}()
	select {
	case a := <-addr:
		p.url = "http://" + a
	case <-p.done:
		t.Fatalf("server exited before listening:\n%s", p.log())
	case <-time.After(testTimeout):
		t.Fatalf("server did not listen:\n%s", p.log())
	}
	resp, err := http.Get(p.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz = %d", resp.StatusCode)
	}
	return p
}

func (p *httpProcess) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// terminate sends SIGTERM and checks for a prompt, clean exit.
func (p *httpProcess) terminate(t *testing.T) {
	t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(shutdownTimeout + 5*time.Second):
		t.Fatalf("server still running after SIGTERM:\n%s", p.log())
	}
	err := p.cmd.Wait()
	t.Logf("server log:\n%s", p.log())
	if err != nil {
		t.Fatalf("server exit after SIGTERM: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("graceful shutdown took %v", d)
	}
	for _, want := range []string{"shutting down", `msg="closed MCP sessions" count=1`, "msg=stopped"} {
		if !strings.Contains(p.log(), want) {
			t.Errorf("server log lacks %q", want)
		}
	}
}

// TestBinary runs the built server over stdio and HTTP, restarting it on
// the same database file in between.
func TestBinary(t *testing.T) {
	ctx := testContext(t)
	bin := buildBinary(t)
	db := filepath.Join(t.TempDir(), "missing", "dir", "tasks.db")

	var final []Task
	t.Run("stdio", func(t *testing.T) {
		cs, cmd := startStdio(t, ctx, bin, db)
		final = exerciseServer(t, ctx, cs)
		stopStdio(t, cs, cmd)
	})
	if len(final) != 2 {
		t.Fatalf("stdio run left %+v", final)
	}

	t.Run("stdioRestart", func(t *testing.T) {
		cs, cmd := startStdio(t, ctx, bin, db)
		if got := listTasks(t, ctx, cs, "all"); !reflect.DeepEqual(got, final) {
			t.Errorf("after restart: %+v\nwant %+v", got, final)
		}
		stopStdio(t, cs, cmd)
	})

	var added Task
	t.Run("httpRestartAndSIGTERM", func(t *testing.T) {
		p := startHTTPBinary(t, bin, db)
		hc := &http.Client{Transport: &http.Transport{}}
		cs, err := newClient().Connect(ctx, &mcp.StreamableClientTransport{Endpoint: p.url + "/mcp", HTTPClient: hc, MaxRetries: -1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close()
		if got := listTasks(t, ctx, cs, "all"); !reflect.DeepEqual(got, final) {
			t.Errorf("over HTTP after restart: %+v\nwant %+v", got, final)
		}
		added, _ = callOK[Task](t, ctx, cs, "createTask", map[string]any{"title": "Added over HTTP", "dueDate": "2030-01-02"})
		// The session (with its standing GET stream) is still open: shutdown
		// must not wait for it. Connections the client dialed but never
		// used would hold http.Server.Shutdown for 5s (it waits that long
		// for a request on a new connection): drop them.
		hc.CloseIdleConnections()
		p.terminate(t)
	})

	t.Run("stdioAfterHTTP", func(t *testing.T) {
		cs, cmd := startStdio(t, ctx, bin, db)
		got := listTasks(t, ctx, cs, "all")
		if want := append(slices.Clone(final), added); !reflect.DeepEqual(got, want) {
			t.Errorf("after HTTP run: %+v\nwant %+v", got, want)
		}
		res, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: summarizePrompt})
		if err != nil {
			t.Fatal(err)
		}
		if text := res.Messages[0].Content.(*mcp.TextContent).Text; !strings.Contains(text, "Added over HTTP") || !strings.Contains(text, "2 open tasks") {
			t.Errorf("prompt after restart:\n%s", text)
		}
		stopStdio(t, cs, cmd)
	})

	t.Run("stdioSIGTERM", func(t *testing.T) {
		cs, cmd := startStdio(t, ctx, bin, db)
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := cs.Wait(); err != nil {
			t.Logf("session ended: %v", err)
		}
		cs.Close()
		if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 0 {
			t.Errorf("stdio server exit after SIGTERM: %v", cmd.ProcessState)
		}
	})
}

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		want    config
		wantErr string
	}{
		{name: "defaults", want: config{transport: "http", db: "/data/tasks.db", addr: ":8080"}},
		{name: "env", env: map[string]string{"TASKS_DB": "/tmp/t.db", "PORT": "9000"},
			want: config{transport: "http", db: "/tmp/t.db", addr: ":9000"}},
		{name: "flags beat env", env: map[string]string{"TASKS_DB": "/tmp/t.db", "PORT": "9000"},
			args: []string{"--db", "/x/y.db", "--addr", "127.0.0.1:1234", "--transport", "stdio", "--log-level", "debug", "--stateless", "--allow-any-host"},
			want: config{transport: "stdio", db: "/x/y.db", addr: "127.0.0.1:1234", logLevel: -4, stateless: true, allowNonLocalHosts: true}},
		{name: "bad transport", args: []string{"--transport", "sse"}, wantErr: "--transport must be http or stdio"},
		{name: "empty db", args: []string{"--db", ""}, wantErr: "--db must not be empty"},
		{name: "extra args", args: []string{"serve"}, wantErr: "unexpected arguments"},
		{name: "bad level", args: []string{"--log-level", "loud"}, wantErr: "log-level"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseFlags(tc.args, func(k string) string { return tc.env[k] }, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}
