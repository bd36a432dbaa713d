package agent

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

//go:embed pydriver.py
var pyDriver []byte

// interp is a persistent bash or Python process. Requests go to its input
// pipe; its stdout and stderr are scanned for the markers that end an
// execution.
type interp struct {
	cmd      *exec.Cmd
	input    io.WriteCloser
	out, err *stream
	exited   chan struct{} // closed once the process has been waited for
}

// executor runs executions; one at a time per interpreter, since they share
// state.
type executor struct {
	procs     *procs
	workspace string
	private   string // the agent's own directory for scripts and the driver
	envMu     sync.Mutex
	env       []string // under envMu: addEnv may add to it
	maxProcs  int

	mu     sync.Mutex // serializes shell and Python executions
	interp map[Language]*interp
}

func newExecutor(p *procs, workspace, private string, maxProcs int) *executor {
	x := &executor{
		procs:     p,
		workspace: workspace,
		private:   private,
		maxProcs:  maxProcs,
		interp:    map[Language]*interp{},
		env: append([]string{
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"HOME=/tmp",
			"LANG=C.UTF-8",
			"TERM=dumb",
			"PYTHONUNBUFFERED=1",
			"PYTHONDONTWRITEBYTECODE=1",
			"MPLBACKEND=Agg",
			"BERTH_MAX_PROCS=" + strconv.Itoa(maxProcs),
			"BERTH_MAX_FIGURES=" + strconv.Itoa(MaxImages),
			"BERTH_MAX_FIGURE_BYTES=" + strconv.Itoa(MaxOneImageBytes),
			"BERTH_MAX_FIGURES_TOTAL_BYTES=" + strconv.Itoa(MaxImageBytes),
		}, passedEnv(os.Environ())...),
	}
	x.env = append(x.env, proxyEnv(os.Environ())...)
	return x
}

// environ is the environment of what the agent starts.
func (x *executor) environ() []string {
	x.envMu.Lock()
	defer x.envMu.Unlock()
	return slices.Clone(x.env)
}

// addEnv adds to the environment of what the agent starts from now on.
func (x *executor) addEnv(kv ...string) {
	x.envMu.Lock()
	defer x.envMu.Unlock()
	for _, e := range kv {
		k, _, _ := strings.Cut(e, "=")
		x.env = slices.DeleteFunc(x.env, func(o string) bool { return strings.HasPrefix(o, k+"=") })
		x.env = append(x.env, e)
	}
}

// passedEnv picks from the agent's own environment what the sandbox's
// driver set for the code it runs: the certificates to trust for its
// egress proxy (the proxy variables are proxyEnv's).
func passedEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE",
			"CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "PIP_CERT", "GIT_SSL_CAINFO":
			out = append(out, kv)
		}
	}
	return out
}

func (x *executor) run(ctx context.Context, req ExecRequest, send func(Event)) Result {
	start := time.Now()
	timeout := time.Duration(req.TimeoutMillis) * time.Millisecond
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if req.MaxOutputBytes <= 0 {
		req.MaxOutputBytes = DefaultMaxOutputBytes
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	k := &sink{max: req.MaxOutputBytes, send: send}

	var r Result
	switch req.Language {
	case Shell, Python:
		r = x.runInterp(ctx, req, k)
	case Command:
		r = x.runCommand(ctx, req, k)
	default:
		r = Result{Status: StatusFailure, ExitCode: -1, Error: fmt.Sprintf("unknown language %q", req.Language)}
	}
	if r.Status == StatusTimeout {
		r.Error = fmt.Sprintf("execution timed out after %s; its processes were killed", timeout)
	}
	k.finish(&r)
	r.DurationMillis = time.Since(start).Milliseconds()
	r.Processes, r.MaxProcs = countProcesses(), x.maxProcs
	return r
}

// countProcesses counts the sandbox's processes but the agent and, under
// bubblewrap, its init.
func countProcesses() int {
	entries, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range entries {
		if c := e.Name()[0]; c >= '0' && c <= '9' {
			n++
		}
	}
	n-- // the agent
	if os.Getpid() != 1 {
		n-- // bubblewrap's init
	}
	return max(n, 0)
}

func (x *executor) runCommand(ctx context.Context, req ExecRequest, k *sink) Result {
	if len(req.Argv) == 0 {
		return Result{Status: StatusFailure, ExitCode: -1, Error: "argv is empty"}
	}
	cmd := x.limitedCommand(req.Argv)
	cmd.Dir, cmd.Env = x.workspace, x.environ()
	cmd.Stdin = strings.NewReader(req.Stdin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, errs, err := x.startPiped(cmd)
	if err != nil {
		return Result{Status: StatusFailure, ExitCode: 127, Error: err.Error()}
	}
	exited := make(chan struct{})
	go func() {
		_ = x.procs.wait(cmd)
		close(exited)
	}()
	// Read until both pipes end; if the command exits while something it
	// left in the background still holds them, stop shortly after.
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	drained := make(chan struct{})
	go func() {
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); _ = out.drain(readCtx, k.stdout) }()
		go func() { defer wg.Done(); _ = errs.drain(readCtx, k.stderr) }()
		wg.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-exited:
		select {
		case <-drained:
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
		}
	case <-ctx.Done():
	}
	stopReading()
	<-drained
	out.close()
	errs.close()
	if ctx.Err() != nil {
		killTree(cmd.Process.Pid)
		<-exited
		return Result{Status: StatusTimeout, ExitCode: -1, Signal: "killed"}
	}
	<-exited
	code, sig := exitInfo(cmd.ProcessState)
	return Result{Status: statusOf(code), ExitCode: code, Signal: sig}
}

// startPiped starts cmd with its stdout and stderr on pipes whose read ends
// belong to the caller (unlike cmd.StdoutPipe, Wait never closes them, so
// output can be read after the process has exited).
func (x *executor) startPiped(cmd *exec.Cmd) (stdout, stderr *stream, err error) {
	or, ow, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	er, ew, err := os.Pipe()
	if err != nil {
		or.Close()
		ow.Close()
		return nil, nil, err
	}
	cmd.Stdout, cmd.Stderr = ow, ew
	err = x.procs.start(cmd)
	ow.Close()
	ew.Close()
	if err != nil {
		or.Close()
		er.Close()
		return nil, nil, err
	}
	return newStream(or), newStream(er), nil
}

func statusOf(exitCode int) Status {
	if exitCode == 0 {
		return StatusSuccess
	}
	return StatusFailure
}

func (x *executor) runInterp(ctx context.Context, req ExecRequest, k *sink) Result {
	x.mu.Lock()
	defer x.mu.Unlock()

	it, reset, err := x.interpreter(req.Language)
	if err != nil {
		return Result{Status: StatusFailure, ExitCode: -1, Error: "cannot start interpreter: " + err.Error(), StateReset: reset}
	}
	nonce := newNonce()
	line, cleanup, err := x.request(req, nonce)
	if err != nil {
		return Result{Status: StatusFailure, ExitCode: -1, Error: err.Error()}
	}
	defer cleanup()
	if _, err := io.WriteString(it.input, line); err != nil {
		x.stop(req.Language)
		return Result{Status: StatusFailure, ExitCode: -1, Error: "interpreter is gone; state was reset, run again", StateReset: true}
	}

	prefix := []byte("\x00berth-" + nonce + ":")
	var payload []byte
	var outErr, errErr error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); payload, outErr = it.out.until(ctx, prefix, k.stdout) }()
	go func() { defer wg.Done(); _, errErr = it.err.until(ctx, prefix, k.stderr) }()
	wg.Wait()

	switch {
	case ctx.Err() != nil:
		x.killAll()
		return Result{Status: StatusTimeout, ExitCode: -1, Signal: "killed", StateReset: true}
	case outErr != nil || errErr != nil:
		// The interpreter died mid-execution: exit, OOM kill, or a signal.
		<-it.exited
		code, sig := exitInfo(it.cmd.ProcessState)
		x.stop(req.Language)
		r := Result{Status: StatusFailure, ExitCode: code, Signal: sig, StateReset: true}
		if sig != "" {
			r.Error = "the interpreter was killed by signal " + sig
		} else {
			r.Error = fmt.Sprintf("the interpreter exited with code %d; session state was reset", code)
		}
		return r
	}
	return parsePayload(req.Language, payload, reset)
}

func parsePayload(lang Language, payload []byte, reset bool) Result {
	r := Result{StateReset: reset}
	if lang == Shell {
		r.ExitCode, _ = strconv.Atoi(string(payload))
	} else {
		var p struct {
			ExitCode int             `json:"exitCode"`
			Value    json.RawMessage `json:"value"`
			Error    string          `json:"error"`
			Images   []Image         `json:"images"`
		}
		if err := json.Unmarshal(payload, &p); err != nil {
			return Result{Status: StatusFailure, ExitCode: -1, Error: "malformed interpreter reply"}
		}
		r.ExitCode, r.Value, r.Error, r.Images = p.ExitCode, p.Value, p.Error, p.Images
	}
	r.Status = statusOf(r.ExitCode)
	return r
}

// request renders what is written to the interpreter for one execution.
func (x *executor) request(req ExecRequest, nonce string) (line string, cleanup func(), err error) {
	if req.Language == Python {
		b, err := json.Marshal(map[string]string{"code": req.Code, "nonce": nonce})
		return string(b) + "\n", func() {}, err
	}
	// The script is sourced from a file so that a syntax error in it cannot
	// derail the shell that reads our own command lines; a second sourced
	// file runs it and writes the markers. Only a short line goes through
	// the pipe: bash reads a pipe one byte (one system call) at a time, but
	// a sourced file in buffered blocks, which matters most under gVisor.
	// (Executions are serialized, so the paths can be fixed.)
	script := filepath.Join(x.private, "cell.sh")
	stdin := filepath.Join(x.private, "stdin")
	runner := filepath.Join(x.private, "run.sh")
	cleanup = func() { os.Remove(script); os.Remove(stdin); x.reserve() }
	if err := x.writeScratch(script, []byte(req.Code+"\n")); err != nil {
		return "", cleanup, err
	}
	in := "/dev/null"
	if req.Stdin != "" {
		if err := x.writeScratch(stdin, []byte(req.Stdin)); err != nil {
			return "", cleanup, err
		}
		in = stdin
	}
	run := fmt.Sprintf(". %s <%s 8>&- 9>&-; printf '\\0berth-%s:%%d\\0' $? >&8; printf '\\0berth-%s:\\0' >&9\n",
		script, in, nonce, nonce)
	if err := x.writeScratch(runner, []byte(run)); err != nil {
		return "", cleanup, err
	}
	return ". " + runner + "\n", cleanup, nil
}

// interpreter returns the running interpreter for lang, starting one if
// needed; reset reports that an earlier one had died.
func (x *executor) interpreter(lang Language) (it *interp, reset bool, err error) {
	if it := x.interp[lang]; it != nil {
		select {
		case <-it.exited:
			x.stop(lang)
			reset = true
		default:
			return it, false, nil
		}
	}
	var cmd *exec.Cmd
	var input io.WriteCloser
	switch lang {
	case Shell:
		cmd = exec.Command("/bin/bash", "--noprofile", "--norc")
		if input, err = cmd.StdinPipe(); err != nil {
			return nil, reset, err
		}
	case Python:
		driver := filepath.Join(x.private, "pydriver.py")
		if err := os.WriteFile(driver, pyDriver, 0o600); err != nil {
			return nil, reset, err
		}
		cmd = exec.Command("/usr/bin/python3", "-u", driver)
		r, w, err := os.Pipe()
		if err != nil {
			return nil, reset, err
		}
		defer r.Close()
		cmd.ExtraFiles = []*os.File{r}
		input = w
	}
	cmd.Dir, cmd.Env = x.workspace, x.environ()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, errs, err := x.startPiped(cmd)
	if err != nil {
		input.Close()
		return nil, reset, err
	}
	it = &interp{cmd: cmd, input: input, out: out, err: errs, exited: make(chan struct{})}
	go func() {
		_ = x.procs.wait(cmd)
		close(it.exited)
	}()
	if lang == Shell {
		// Keep the real output pipes on fds 8 and 9 for the markers, so a
		// script that redirects its own output cannot swallow them.
		init := "exec 8>&1 9>&2\n"
		if x.maxProcs > 0 {
			init = fmt.Sprintf("ulimit -u %d\n", x.maxProcs) + init
		}
		if _, err := io.WriteString(input, init); err != nil {
			x.interp[lang] = it
			x.stop(lang)
			return nil, reset, err
		}
	}
	x.interp[lang] = it
	return it, reset, nil
}

// stop kills an interpreter and everything it started.
func (x *executor) stop(lang Language) {
	it := x.interp[lang]
	if it == nil {
		return
	}
	delete(x.interp, lang)
	it.input.Close()
	killTree(it.cmd.Process.Pid)
	<-it.exited
	it.out.close()
	it.err.close()
}

// killAll kills every process in the sandbox but the agent (kill(-1) is
// atomic with respect to fork, so even a fork bomb goes in one pass or a
// few), and forgets the interpreters, which start again on next use.
// Callers hold x.mu.
func (x *executor) killAll() {
	for i := 0; i < 20; i++ {
		if err := syscall.Kill(-1, syscall.SIGKILL); err != nil {
			break // ESRCH: nothing left to kill
		}
		time.Sleep(time.Duration(i+1) * time.Millisecond)
	}
	for lang, it := range x.interp {
		it.input.Close()
		<-it.exited
		it.out.close()
		it.err.close()
		delete(x.interp, lang)
	}
}

// reset kills every process of the session and resets its interpreters.
func (x *executor) reset() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.killAll()
}

// close stops every interpreter.
func (x *executor) close() {
	x.mu.Lock()
	defer x.mu.Unlock()
	for lang := range x.interp {
		x.stop(lang)
	}
}

func newNonce() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

var errBadName = errors.New("bad name")
