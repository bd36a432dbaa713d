package agent_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/internal/testutil"
	"golang.org/x/sys/unix"
)

// TestMain lets a test run this binary as an agent that starts as root
// and drops privileges, as "berth agent --listen --token-file --user" does.
func TestMain(m *testing.M) {
	if dir := os.Getenv("BERTH_AGENT_TEST_CHILD"); dir != "" {
		if err := childAgent(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func childAgent(dir string) error {
	tok, err := agent.ReadToken(filepath.Join(dir, "token"))
	if err != nil {
		return err
	}
	opts := agent.Options{Workspace: filepath.Join(dir, "ws"), Private: filepath.Join(dir, "priv"), Token: tok}
	if err := agent.DropPrivileges(1000, 1000, opts.Workspace, opts.Private); err != nil {
		return err
	}
	if os.Getenv("BERTH_AGENT_TEST_NOHARDEN") == "" {
		if err := agent.Harden(); err != nil {
			return err
		}
	} else if err := unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0); err != nil {
		// The control: an agent left dumpable (dropping the uid alone
		// makes it non-dumpable until it says otherwise).
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	return agent.Serve(context.Background(), ln, opts, func() { fmt.Println(ln.Addr()) })
}

// startTCPAgent serves an agent on loopback TCP that requires token.
func startTCPAgent(t *testing.T, token string) string {
	t.Helper()
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = agent.Serve(ctx, ln, agent.Options{Workspace: filepath.Join(dir, "ws"), Private: filepath.Join(dir, "priv"), Token: token}, nil)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// echoServer accepts connections on loopback and echoes them.
func echoServer(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// An agent on TCP serves only callers with its token: every call and
// every stream (DialPort relays over TCP, no fd passing).
func TestAgentTCPToken(t *testing.T) {
	token := rand.Text() + rand.Text()
	addr := startTCPAgent(t, token)
	port := echoServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name, token string
		ok          bool
	}{
		{"right token", token, true},
		{"wrong token", rand.Text() + rand.Text(), false},
		{"no token", "", false},
		{"token prefix", token[:len(token)-1], false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := agent.TCPClient(addr, tc.token)
			defer c.Close()
			out, err := c.Exec(ctx, agent.ExecRequest{Language: agent.Command, Argv: []string{"echo", "hi"}}, nil)
			if tc.ok != (err == nil) || (err == nil && out.Stdout != "hi\n") {
				t.Fatalf("exec: %v %+v", err, out)
			}
			conn, err := c.DialPort(ctx, port)
			if tc.ok != (err == nil) {
				t.Fatalf("dial port: %v", err)
			}
			if err == nil {
				defer conn.Close()
				_, _ = conn.Write([]byte("ping\n"))
				line, err := bufio.NewReader(conn).ReadString('\n')
				if err != nil || line != "ping\n" {
					t.Fatalf("echo through the relay: %q %v", line, err)
				}
			}
			if _, err := c.Tunnel(ctx, ""); tc.ok != (err == nil) {
				t.Fatalf("tunnel: %v", err)
			}
		})
	}
}

// Code that the agent runs cannot read the agent's token: not from the
// token file (root-only; the agent read it as root, then dropped to the
// code's uid), any process's environment or command line, nor the
// agent's memory (non-dumpable). Needs root.
func TestAgentTokenHiddenFromCode(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to drop privileges")
	}
	for _, harden := range []bool{true, false} {
		t.Run(fmt.Sprintf("harden=%v", harden), func(t *testing.T) {
			found := hostileTokenHunt(t, harden)
			if harden && found != "" {
				t.Fatalf("code found the token: %s", found)
			}
			if !harden && !strings.Contains(found, "mem") {
				// The control: without Harden the same hunt must succeed,
				// or the test proves nothing.
				t.Fatalf("control: code did not find the token in a dumpable agent's memory (%q)", found)
			}
		})
	}
}

func hostileTokenHunt(t *testing.T, harden bool) string {
	dir, err := os.MkdirTemp("", "berth-kdriver-agent-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	token := rand.Text() + rand.Text()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hunt.py"), []byte(testutil.TokenHunt), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "BERTH_AGENT_TEST_CHILD="+dir)
	if !harden {
		cmd.Env = append(cmd.Env, "BERTH_AGENT_TEST_NOHARDEN=1")
	}
	cmd.Stderr = os.Stderr
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("agent did not start: %v", err)
	}
	c := agent.TCPClient(strings.TrimSpace(addr), token)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := c.Exec(ctx, agent.ExecRequest{Language: agent.Command,
		Argv: append([]string{"python3", filepath.Join(dir, "hunt.py")}, testutil.TokenHuntArgs(token, tokenFile)...)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if out.ExitCode != 0 {
		t.Fatalf("hunt: %+v", out)
	}
	id, err := c.Exec(ctx, agent.ExecRequest{Language: agent.Shell, Code: "id -u; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status"}, nil)
	if err != nil || !strings.HasPrefix(id.Stdout, "1000\n") || !strings.Contains(id.Stdout, "CapEff:\t0000000000000000") || (!withCgo && !strings.Contains(id.Stdout, "NoNewPrivs:\t1")) {
		t.Fatalf("code runs as %q (%v)", id.Stdout, err)
	}
	if errors.Is(err, agent.ErrUnavailable) {
		t.Fatal(err)
	}
	return strings.TrimPrefix(strings.TrimSpace(out.Stdout), "found:")
}
