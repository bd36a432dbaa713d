// Package e2e tests Berth from the outside: the real berth binary started
// as "berth up", driven by its CLI and over HTTP, with real sandboxes.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/dataplane"
	"github.com/berth-dev/berth/internal/testutil"
	"github.com/berth-dev/berth/server"
)

// berth is a running "berth up".
type berth struct {
	t       testing.TB
	bin     string
	dataDir string
	cmd     *exec.Cmd
	info    server.Info
	logs    *syncBuffer
	exited  chan struct{}
}

// syncBuffer is the server's output, written by the exec package while a
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitLog waits until the server has logged a line that contains all of
// want, and returns it.
func (b *berth) waitLog(want ...string) string {
	b.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
	lines:
		for _, line := range strings.Split(b.logs.String(), "\n") {
			for _, w := range want {
				if !strings.Contains(line, w) {
					continue lines
				}
			}
			return line
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("no log line with %q", want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runsc returns the project's runsc, which `make test` installs in .bin.
func runsc(t testing.TB) string {
	p := filepath.Join(testutil.ModuleRoot(), ".bin", "runsc")
	if _, err := os.Stat(p); err != nil {
		return testutil.RequireTool(t, "runsc")
	}
	return p
}

// startBerth starts a server on a fresh (or the given) data directory with
// ephemeral ports, and any extra `berth up` flags.
func startBerth(t testing.TB, dataDir string, flags ...string) *berth {
	t.Helper()
	return startBerthEnv(t, nil, dataDir, flags...)
}

// startBerthEnv is startBerth with env added to the server's environment.
func startBerthEnv(t testing.TB, env []string, dataDir string, flags ...string) *berth {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "bwrap")
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	b := &berth{t: t, bin: testutil.BerthBinary(t), dataDir: dataDir, logs: &syncBuffer{}, exited: make(chan struct{})}
	b.cmd = exec.Command(b.bin, append([]string{"up", "--data-dir", dataDir, "--listen", "127.0.0.1:0",
		"--admin-listen", "127.0.0.1:0", "--runsc", runsc(t), "--log-level", "debug"}, flags...)...)
	if env != nil {
		b.cmd.Env = append(os.Environ(), env...)
	}
	b.cmd.Stdout = b.logs
	b.cmd.Stderr = b.logs
	_ = os.Remove(filepath.Join(dataDir, server.InfoFile))
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = b.cmd.Wait()
		close(b.exited)
	}()
	t.Cleanup(func() {
		b.stop()
		if t.Failed() {
			t.Logf("server log:\n%s", b.logs.String())
		}
		removeInstanceState(t, dataDir)
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		raw, err := os.ReadFile(filepath.Join(dataDir, server.InfoFile))
		if err == nil && json.Unmarshal(raw, &b.info) == nil && b.info.PID == b.cmd.Process.Pid {
			break
		}
		select {
		case <-b.exited:
			t.Fatalf("berth up exited early:\n%s", b.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("berth up did not start:\n%s", b.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return b
}

// stop sends SIGTERM and waits for a graceful exit.
// removeInstanceState removes what a server on dataDir kept under
// /var/lib/berth (the staged agent, disk templates, app revisions): a
// server keeps it for its next start, but a test's data dir has none, and
// hundreds of test servers would fill the disk (and with it the disk
// admission budget of the next ones). Anything still mounted there is left.
func removeInstanceState(t testing.TB, dataDir string) {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return
	}
	dir := filepath.Join("/var/lib/berth", server.Instance(abs))
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil && strings.Contains(string(mi), " "+dir+"/") {
		t.Logf("left %s: something is still mounted under it", dir)
		return
	}
	_ = os.RemoveAll(dir)
}

func (b *berth) stop() {
	select {
	case <-b.exited:
		return
	default:
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exited:
	case <-time.After(60 * time.Second):
		_ = b.cmd.Process.Kill()
		b.t.Errorf("berth up did not stop within 60s after SIGTERM")
		<-b.exited
	}
}

// cli runs a berth command against this server and returns stdout; it
// fails the test if the command fails.
func (b *berth) cli(args ...string) string {
	b.t.Helper()
	out, errOut, code := b.try(args...)
	if code != 0 {
		b.t.Fatalf("berth %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

// try runs a berth command and returns stdout, stderr and the exit code.
func (b *berth) try(args ...string) (string, string, int) {
	cmd := exec.Command(b.bin, args...)
	cmd.Env = append(os.Environ(), "BERTH_DATA_DIR="+b.dataDir)
	return b.runCmd(cmd)
}

// runCmd runs cmd and returns stdout, stderr and the exit code.
func (b *berth) runCmd(cmd *exec.Cmd) (string, string, int) {
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		b.t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

// cliJSON runs a command with -o json and decodes its output.
func (b *berth) cliJSON(v any, args ...string) {
	b.t.Helper()
	out := b.cli(append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		b.t.Fatalf("berth %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// createPool creates a pool with the CLI and returns its key.
func (b *berth) createPool(name string, flags ...string) string {
	b.t.Helper()
	var out struct {
		APIKey string `json:"apiKey"`
	}
	b.cliJSON(&out, append([]string{"pool", "create", name}, flags...)...)
	if out.APIKey == "" {
		b.t.Fatal("no key in pool create output")
	}
	return out.APIKey
}

// resp is an HTTP response read whole.
type resp struct {
	Status int
	Body   []byte
	Header http.Header
}

func (r resp) errorCode() string {
	var e struct {
		Error struct{ Code, Message string }
	}
	_ = json.Unmarshal(r.Body, &e)
	return e.Error.Code
}

// do sends a request to the data plane.
func (b *berth) do(method, path string, header http.Header, body io.Reader) resp {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, b.info.PublicURL+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer r.Body.Close()
	data, _ := io.ReadAll(r.Body)
	return resp{Status: r.StatusCode, Body: data, Header: r.Header}
}

func keyHeader(key string) http.Header {
	return http.Header{"X-Ms-Apikey": {key}, "Content-Type": {"application/json"}}
}

// execute runs code and returns the parsed result; it fails unless the
// HTTP status is 200.
func (b *berth) execute(poolName, key, id, code string) dataplane.ExecuteResult {
	b.t.Helper()
	r := b.executeRaw(poolName, key, id, code)
	if r.Status != http.StatusOK {
		b.t.Fatalf("execute in %s/%s: HTTP %d: %s", poolName, id, r.Status, r.Body)
	}
	var out dataplane.ExecuteResponse
	if err := json.Unmarshal(r.Body, &out); err != nil {
		b.t.Fatal(err)
	}
	return out.Properties
}

func (b *berth) executeRaw(poolName, key, id, code string) resp {
	b.t.Helper()
	body, _ := json.Marshal(map[string]any{"properties": map[string]any{
		"codeInputType": "inline", "executionType": "synchronous", "code": code,
	}})
	return b.do(http.MethodPost, fmt.Sprintf("/pools/%s/code/execute?identifier=%s", poolName, url.QueryEscape(id)),
		keyHeader(key), bytes.NewReader(body))
}

// hostService listens on addr (on the host) and greets every connection
// with banner: a service that sandboxes must not reach. It returns the port.
func hostService(t testing.TB, addr, banner string) int {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(banner + "\n"))
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}
