package stdiobridge

import (
	"io"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// What a server writes just before it exits is not lost.
func TestCommandProcessKeepsLastOutput(t *testing.T) {
	p, err := CommandProcess(exec.Command("sh", "-c", `echo '{"jsonrpc":"2.0","method":"bye"}'`))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	time.Sleep(100 * time.Millisecond) // let it exit first
	out, err := io.ReadAll(p.Stdout())
	if err != nil || string(out) != `{"jsonrpc":"2.0","method":"bye"}`+"\n" {
		t.Errorf("stdout = %q, %v", out, err)
	}
}

// A server that ignores the end of its stdin is terminated; Close may be
// called twice, concurrently.
func TestCommandProcessCloseSignals(t *testing.T) {
	p, err := CommandProcess(exec.Command("sleep", "60"))
	if err != nil {
		t.Fatal(err)
	}
	pid := p.(*cmdProcess).cmd.Process.Pid
	start := time.Now()
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { p.Close() })
	}
	wg.Wait()
	if d := time.Since(start); d < stdinGrace || d > stdinGrace+sigtermGrace {
		t.Errorf("Close took %v, want SIGTERM after %v", d, stdinGrace)
	}
	if alive(pid) {
		t.Error("process alive after Close")
	}
	// Reading stdout ends (EOF or closed) rather than blocking.
	io.ReadAll(p.Stdout())
	p.Close()
}

func TestCommandProcessRejectsStdio(t *testing.T) {
	cmd := exec.Command("true")
	cmd.Stdout = io.Discard
	if _, err := CommandProcess(cmd); err == nil {
		t.Error("CommandProcess accepted a cmd with Stdout set")
	}
}
