package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// ServiceSpec describes a long-running process in the sandbox: an app
// replica's command.
type ServiceSpec struct {
	ID string `json:"id"`
	// Command runs with /bin/sh -c; or, if Argv is set, Argv runs as it
	// is, with no shell (for images that have none).
	Command string            `json:"command"`
	Argv    []string          `json:"argv,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	Dir     string            `json:"dir,omitempty"`
	// Stdio reserves the process's stdin and stdout for Attach (a stdio MCP
	// server); only stderr goes to the logs.
	Stdio bool `json:"stdio,omitempty"`
}

// ServiceExit is how a service ended.
type ServiceExit struct {
	ExitCode int    `json:"exitCode"`
	Signal   string `json:"signal,omitempty"`
}

// LogLine is one line a service wrote.
type LogLine struct {
	Time   time.Time `json:"time"`
	Stream string    `json:"stream"` // stdout or stderr
	Line   string    `json:"line"`
}

const (
	maxLogLines   = 2000
	maxLogLineLen = 16 << 10
)

type service struct {
	spec   ServiceSpec
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout io.ReadCloser
	exited chan struct{}
	exit   ServiceExit

	mu       sync.Mutex
	lines    []LogLine
	subs     map[chan LogLine]struct{}
	attached bool
}

func (s *service) log(stream, line string) {
	l := LogLine{Time: time.Now().UTC(), Stream: stream, Line: line}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lines = append(s.lines, l)
	if len(s.lines) > maxLogLines {
		s.lines = s.lines[len(s.lines)-maxLogLines:]
	}
	for ch := range s.subs {
		select {
		case ch <- l:
		default: // a slow follower loses lines rather than stalling the app
		}
	}
}

// collect splits a pipe into log lines.
func (s *service) collect(stream string, r io.Reader) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if len(line) > maxLogLineLen {
				line = line[:maxLogLineLen]
			}
			s.log(stream, string(bytes.TrimRight(line, "\r\n")))
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return
		}
	}
}

type services struct {
	x  *executor
	mu sync.Mutex
	m  map[string]*service
}

func (ss *services) start(spec ServiceSpec) (*service, error) {
	if spec.ID == "" || (spec.Command == "") == (len(spec.Argv) == 0) {
		return nil, fmt.Errorf("%w: a service needs an id and a command or an argv", errBadName)
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if old := ss.m[spec.ID]; old != nil {
		select {
		case <-old.exited:
		default:
			return nil, fmt.Errorf("%w: service %q is running", errBadName, spec.ID)
		}
	}
	// The limit on processes applies before the command runs.
	var cmd *exec.Cmd
	switch {
	case len(spec.Argv) > 0:
		cmd = ss.x.limitedCommand(spec.Argv)
	case ss.x.maxProcs > 0:
		// bash, not sh: dash has no ulimit -u.
		cmd = exec.Command("/bin/bash", "-c", `ulimit -u "$BERTH_MAX_PROCS" && exec /bin/sh -c "$BERTH_SERVICE_COMMAND"`)
	default:
		cmd = exec.Command("/bin/sh", "-c", spec.Command)
	}
	cmd.Dir = spec.Dir
	if cmd.Dir == "" {
		cmd.Dir = ss.x.workspace
	}
	cmd.Env = append(ss.x.environ(), "BERTH_SERVICE_COMMAND="+spec.Command)
	for k, v := range spec.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	s := &service{spec: spec, cmd: cmd, exited: make(chan struct{}), subs: map[chan LogLine]struct{}{}}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	var stdout io.ReadCloser
	if spec.Stdio {
		if s.stdin, err = cmd.StdinPipe(); err != nil {
			return nil, err
		}
		if s.stdout, err = cmd.StdoutPipe(); err != nil {
			return nil, err
		}
	} else if stdout, err = cmd.StdoutPipe(); err != nil {
		return nil, err
	}
	if err := ss.x.procs.start(cmd); err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.collect("stderr", stderr) }()
	if stdout != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.collect("stdout", stdout) }()
	}
	go func() {
		wg.Wait() // the pipes first: Wait closes them
		_ = ss.x.procs.wait(cmd)
		s.exit.ExitCode, s.exit.Signal = exitInfo(cmd.ProcessState)
		s.log("system", fmt.Sprintf("process exited (code %d%s)", s.exit.ExitCode, map[bool]string{true: ", signal " + s.exit.Signal}[s.exit.Signal != ""]))
		close(s.exited)
	}()
	ss.m[spec.ID] = s
	return s, nil
}

func (ss *services) get(id string) (*service, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.m[id]
	if s == nil {
		return nil, fmt.Errorf("service %q: %w", id, os.ErrNotExist)
	}
	return s, nil
}

// stop ends a service: SIGTERM to its process group, SIGKILL after grace.
func (ss *services) stop(id string, grace time.Duration) error {
	s, err := ss.get(id)
	if err != nil {
		return err
	}
	pid := s.cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(grace):
		killTree(pid)
		<-s.exited
	}
	ss.mu.Lock()
	if ss.m[id] == s {
		delete(ss.m, id)
	}
	ss.mu.Unlock()
	return nil
}

func (ss *services) routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /services", func(w http.ResponseWriter, r *http.Request) {
		var spec ServiceSpec
		if err := json.NewDecoder(r.Body).Decode(&spec); err != nil {
			writeError(w, err)
			return
		}
		s, err := ss.start(spec)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusCreated, map[string]any{"id": spec.ID, "pid": s.cmd.Process.Pid})
	})
	mux.HandleFunc("GET /services/{id}/wait", func(w http.ResponseWriter, r *http.Request) {
		s, err := ss.get(r.PathValue("id"))
		if err != nil {
			writeError(w, err)
			return
		}
		select {
		case <-s.exited:
			writeJSON(w, http.StatusOK, s.exit)
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("GET /services/{id}/logs", func(w http.ResponseWriter, r *http.Request) {
		s, err := ss.get(r.PathValue("id"))
		if err != nil {
			writeError(w, err)
			return
		}
		follow := r.URL.Query().Get("follow") == "true"
		ch := make(chan LogLine, 256)
		s.mu.Lock()
		past := append([]LogLine(nil), s.lines...)
		if follow {
			s.subs[ch] = struct{}{}
		}
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			delete(s.subs, ch)
			s.mu.Unlock()
		}()
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		rc := http.NewResponseController(w)
		for _, l := range past {
			_ = enc.Encode(l)
		}
		_ = rc.Flush()
		if !follow {
			return
		}
		for {
			select {
			case l := <-ch:
				_ = enc.Encode(l)
				_ = rc.Flush()
			case <-s.exited:
				// Every line was logged before exited closed: send
				// what is still queued, then end the stream.
				for {
					select {
					case l := <-ch:
						_ = enc.Encode(l)
					default:
						_ = rc.Flush()
						return
					}
				}
			case <-r.Context().Done():
				return
			}
		}
	})
	mux.HandleFunc("DELETE /services/{id}", func(w http.ResponseWriter, r *http.Request) {
		grace, _ := time.ParseDuration(r.URL.Query().Get("grace"))
		if grace <= 0 {
			grace = 5 * time.Second
		}
		if err := ss.stop(r.PathValue("id"), grace); err != nil {
			writeError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /services/{id}/attach", func(w http.ResponseWriter, r *http.Request) {
		s, err := ss.get(r.PathValue("id"))
		if err != nil {
			writeError(w, err)
			return
		}
		s.mu.Lock()
		busy := s.attached || s.stdin == nil
		s.attached = true
		s.mu.Unlock()
		if busy {
			writeError(w, fmt.Errorf("%w: service %q has no free stdio to attach to", errBadName, s.spec.ID))
			return
		}
		conn, err := upgrade(w)
		if err != nil {
			return
		}
		splice(conn, struct {
			io.Reader
			io.WriteCloser
		}{s.stdout, s.stdin}, s.exited)
	})
	mux.HandleFunc("GET /dial", func(w http.ResponseWriter, r *http.Request) {
		port, err := strconv.Atoi(r.URL.Query().Get("port"))
		if err != nil || port < 1 || port > 65535 {
			writeError(w, fmt.Errorf("%w: port must be 1-65535", errBadName))
			return
		}
		var d net.Dialer
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		target, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		cancel()
		if err != nil {
			writeJSON(w, http.StatusBadGateway, ErrorBody{Code: CodeUnavailable, Message: err.Error()})
			return
		}
		conn, err := upgrade(w)
		if err != nil {
			target.Close()
			return
		}
		if r.URL.Query().Get("pass") == "fd" && passConn(conn, target) {
			return // the host holds the connection itself now
		}
		splice(conn, target, nil)
	})
}

// upgradeProto is the protocol name of the agent's raw streams.
const upgradeProto = "berth-stream"

// upgrade answers 101 and takes over the connection.
func upgrade(w http.ResponseWriter) (net.Conn, error) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, err
	}
	_, err = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + upgradeProto + "\r\n\r\n")
	if err == nil {
		err = brw.Flush()
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	if n := brw.Reader.Buffered(); n > 0 {
		// Bytes the client sent right after its request belong to the stream.
		b, _ := brw.Reader.Peek(n)
		return &prefixConn{Conn: conn, r: io.MultiReader(bytes.NewReader(bytes.Clone(b)), conn)}, nil
	}
	return conn, nil
}

// splice copies both ways until either side ends (or done is closed).
func splice(a net.Conn, b io.ReadWriteCloser, done <-chan struct{}) {
	errc := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(b, a)
		if cw, ok := b.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			b.Close()
		}
		errc <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(a, b)
		if cw, ok := a.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		errc <- struct{}{}
	}()
	select {
	case <-errc:
		<-errc
	case <-done:
	}
	a.Close()
	b.Close()
}

// prefixConn is a connection with bytes already read from it put back.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Markers of the fd-passing handshake on a /dial stream.
const (
	dialReady  = 'R' // host → agent: headers read, send the socket
	dialPassed = 'F' // agent → host: the socket comes with this byte
	dialSplice = 'S' // agent → host: no socket; bytes flow through here
)

// passConn hands the connected socket to the host over the Unix socket
// (SCM_RIGHTS), so the agent is out of the data path; sockets keep their
// network namespace. It reports false (after telling the host so) where
// that cannot be done, e.g. under gVisor, and the caller splices instead.
func passConn(conn net.Conn, target net.Conn) bool {
	uc, ok := conn.(*net.UnixConn)
	tc, ok2 := target.(*net.TCPConn)
	var b [1]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil || b[0] != dialReady {
		return false
	}
	if ok && ok2 {
		if f, err := tc.File(); err == nil {
			_, _, err = uc.WriteMsgUnix([]byte{dialPassed}, syscall.UnixRights(int(f.Fd())), nil)
			f.Close()
			if err == nil {
				target.Close()
				conn.Close()
				return true
			}
		}
	}
	_, _ = conn.Write([]byte{dialSplice})
	return false
}
