package stdiobridge

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Process is one running stdio MCP server: the bridge writes client→server
// messages to Stdin and reads server→client messages from Stdout, as
// newline-delimited JSON-RPC.
type Process interface {
	Stdin() io.WriteCloser
	Stdout() io.Reader
	// Close stops the process. It must be safe to call more than once and
	// concurrently with reads of Stdout, which it should end (io.EOF or an
	// error).
	Close() error
}

// Grace periods used by the Process returned by CommandProcess when it is
// closed: first stdin is closed (the MCP stdio shutdown signal), then SIGTERM
// is sent, then SIGKILL.
const (
	stdinGrace   = 2 * time.Second
	sigtermGrace = 2 * time.Second
	// outputGrace is how long stdout may stay open (held by a child of the
	// server) after the server itself has exited.
	outputGrace = 2 * time.Second
)

// CommandProcess starts cmd and returns it as a Process. cmd.Stdin and
// cmd.Stdout must be nil (the bridge owns them); cmd.Stderr is left as the
// caller set it (nil discards it).
//
// The server's stdout is read until EOF even after it has exited, so that its
// last messages are not lost; if a child of the server keeps stdout open, it
// is closed outputGrace after the server exits. Close shuts the server down
// the way the MCP stdio transport specifies: close stdin, wait, SIGTERM,
// wait, SIGKILL. If cmd was made with exec.CommandContext, cancelling that
// context kills it at once.
func CommandProcess(cmd *exec.Cmd) (Process, error) {
	if cmd.Stdin != nil || cmd.Stdout != nil {
		return nil, errors.New("stdiobridge: CommandProcess: cmd.Stdin and cmd.Stdout must be nil")
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	// An os.Pipe rather than cmd.StdoutPipe: Wait closes the read end of a
	// StdoutPipe as soon as the process exits, which can drop the last
	// messages the server wrote before exiting.
	pr, pw, err := os.Pipe()
	if err != nil {
		stdin.Close()
		return nil, err
	}
	cmd.Stdout = pw
	if err := cmd.Start(); err != nil {
		stdin.Close()
		pr.Close()
		pw.Close()
		return nil, err
	}
	pw.Close() // the child holds its own copy
	p := &cmdProcess{
		cmd:    cmd,
		stdin:  stdin,
		stdout: pr,
		eof:    make(chan struct{}),
		exited: make(chan struct{}),
	}
	go p.wait()
	return p, nil
}

type cmdProcess struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *os.File

	eofOnce sync.Once
	eof     chan struct{} // closed when a read of stdout has failed (EOF included)
	exited  chan struct{} // closed when cmd.Wait has returned

	closeOnce sync.Once
}

func (p *cmdProcess) Stdin() io.WriteCloser { return p.stdin }
func (p *cmdProcess) Stdout() io.Reader     { return (*eofReader)(p) }

type eofReader cmdProcess

func (r *eofReader) Read(b []byte) (int, error) {
	n, err := r.stdout.Read(b)
	if err != nil {
		r.eofOnce.Do(func() { close(r.eof) })
	}
	return n, err
}

func (p *cmdProcess) wait() {
	_ = p.cmd.Wait()
	close(p.exited)
	select {
	case <-p.eof:
	case <-time.After(outputGrace):
	}
	p.stdout.Close()
}

func (p *cmdProcess) Close() error {
	p.closeOnce.Do(func() {
		p.stdin.Close()
		if waitFor(p.exited, stdinGrace) {
			return
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		if waitFor(p.exited, sigtermGrace) {
			return
		}
		_ = p.cmd.Process.Kill()
		<-p.exited
	})
	// Whoever called first has seen the process exit; a later or concurrent
	// caller waits for that too.
	<-p.exited
	return nil
}

func waitFor(c <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c:
		return true
	case <-t.C:
		return false
	}
}
