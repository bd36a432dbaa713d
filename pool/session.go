package pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/sandbox"
)

// Session is one identifier's sandbox.
type Session struct {
	ID      string
	pool    *Pool
	sb      sandbox.Sandbox
	created time.Time
	ready   chan struct{} // closed once sb (or err) is set
	err     error
	// shape is what the session's sandbox is made with; port and
	// transport reach a custom session's container.
	shape     shape
	port      int
	transport *http.Transport

	// written is the activity last recorded in the cluster (cluster mode;
	// the reaper's).
	written time.Time

	mu       sync.Mutex
	lastUsed time.Time
	running  int
	// cpuPrev and cpuLast are the last two CPU samples at least a second
	// apart, for CPURate.
	cpuPrev, cpuLast cpuSample
}

type cpuSample struct {
	at   time.Time
	used time.Duration
}

func (s *Session) isReady() bool {
	select {
	case <-s.ready:
		return s.err == nil
	default:
		return false
	}
}

func (s *Session) touch() {
	s.mu.Lock()
	s.lastUsed = time.Now()
	s.mu.Unlock()
}

// begin marks the start of an operation; the session is not idle until
// the returned function runs.
func (s *Session) begin() func() {
	s.mu.Lock()
	s.running++
	s.lastUsed = time.Now()
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		s.running--
		s.lastUsed = time.Now()
		s.mu.Unlock()
	}
}

func (s *Session) idleFor() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running > 0 {
		return 0
	}
	return time.Since(s.lastUsed)
}

func (s *Session) activity() (time.Time, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastUsed, s.running
}

// Stats measures the session's sandbox (zero if the driver cannot).
func (s *Session) Stats() sandbox.Stats {
	if r, ok := s.sb.(sandbox.StatsReporter); ok {
		return r.Stats()
	}
	return sandbox.Stats{}
}

// CPURate takes a sample of the CPU time the session has used (from its
// Stats) and returns the cores it used on average since the sample before
// (at least a second older; the first time: since it was created).
func (s *Session) CPURate(used time.Duration) float64 {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cpuLast.at.IsZero() {
		s.cpuLast = cpuSample{at: s.created}
	}
	if now.Sub(s.cpuLast.at) >= time.Second {
		s.cpuPrev, s.cpuLast = s.cpuLast, cpuSample{at: now, used: used}
	}
	base := s.cpuPrev
	if base.at.IsZero() {
		base = cpuSample{at: s.created}
	}
	dt := now.Sub(base.at)
	if dt <= 0 || used < base.used {
		return 0
	}
	return float64(used-base.used) / float64(dt)
}

// ExecOptions tune one execution. The zero value uses the pool's settings.
type ExecOptions struct {
	// Timeout bounds the execution; it is capped at the pool's timeout.
	Timeout time.Duration
	// Stdin is given to a command (Language Command or Shell).
	Stdin string
	// OnEvent, if set, sees output as it is produced.
	OnEvent func(agent.Event)
	// MaxOutputBytes caps stdout and stderr each (default 1 MiB).
	MaxOutputBytes int64
}

// Execution is the outcome of Exec.
type Execution struct {
	agent.Output
	// OOMKilled is set when the kernel killed a process of the execution
	// for exceeding the session's memory limit.
	OOMKilled bool
	// ProcessLimit is set when the session reached its process limit and
	// its processes were killed.
	ProcessLimit bool
	// DiskFull is set when the execution failed with the session's disk
	// (its /mnt/data and /tmp) full, in bytes or in files.
	DiskFull bool
}

// Exec runs code in the session: lang is agent.Shell, agent.Python or
// agent.Command (argv).
func (s *Session) Exec(ctx context.Context, lang agent.Language, code string, argv []string, o ExecOptions) (*Execution, error) {
	defer s.begin()()
	cfg := s.pool.Config()
	timeout := cfg.Timeout()
	if o.Timeout > 0 && o.Timeout < timeout {
		timeout = o.Timeout
	}
	var before uint64
	stats, _ := s.sb.(sandbox.StatsReporter)
	if stats != nil {
		before = stats.Stats().OOMKills
	}
	// The agent enforces the timeout and kills the process tree; the
	// client gives it agent.ExecGrace more to answer, and reports an agent
	// that does not as a protocol violation (agentError).
	out, err := s.sb.Agent().Exec(ctx, agent.ExecRequest{
		Language: lang, Code: code, Argv: argv, Stdin: o.Stdin,
		TimeoutMillis: timeout.Milliseconds(), MaxOutputBytes: o.MaxOutputBytes,
	}, o.OnEvent)
	oom := stats != nil && stats.Stats().OOMKills > before
	oomMsg := fmt.Sprintf("out of memory: a process exceeded the session's memory limit (%s) and was killed", FormatBytes(cfg.MemoryBytes))
	if err != nil {
		if oom && s.lost() {
			// The kernel killed the sandbox itself (under gVisor, the OOM
			// killer may pick the sentry): the execution's answer is still
			// "out of memory", and the identifier starts afresh.
			return &Execution{
				Output: agent.Output{Result: agent.Result{Status: agent.StatusFailure, ExitCode: -1, Signal: "killed", StateReset: true,
					Error: oomMsg + "; the session's sandbox was lost with it, so its files and state are gone"}},
				OOMKilled: true,
			}, nil
		}
		return nil, s.agentError(err)
	}
	x := &Execution{Output: *out}
	if oom {
		x.OOMKilled = true
		x.Status = agent.StatusFailure
		x.Error = oomMsg
	}
	if stats != nil && (x.Status != agent.StatusSuccess || x.ExitCode != 0) {
		if st := stats.Stats(); st.DiskFull() {
			x.DiskFull = true
			x.Error = diskFullMessage(st, x.Error)
		}
	}
	// An execution that leaves more than half of the session's process
	// budget running behind it is a runaway (a fork bomb, a spawn loop): a
	// session in that state can do nothing useful, so its processes are
	// killed and it recovers.
	if x.MaxProcs > 0 && x.Processes > x.MaxProcs/2 {
		if err := s.sb.Agent().Reset(context.WithoutCancel(ctx)); err != nil {
			return nil, s.agentError(err)
		}
		x.ProcessLimit = true
		x.StateReset = true
		if x.Status == agent.StatusSuccess {
			x.Status = agent.StatusFailure
		}
		x.Error = fmt.Sprintf("runaway processes: %d were left running (the session's limit is %d); all of the session's processes were killed", x.Processes, x.MaxProcs)
	}
	return x, nil
}

// diskFullMessage says that the session's disk is full, and how full.
func diskFullMessage(st sandbox.Stats, prev string) string {
	what := fmt.Sprintf("%s of %s used", FormatBytes(st.DiskBytes), FormatBytes(st.DiskLimitBytes))
	if st.DiskInodesLimit-st.DiskInodes <= max(st.DiskInodesLimit/1000, 1) {
		what = fmt.Sprintf("%d of %d files used", st.DiskInodes, st.DiskInodesLimit)
	}
	msg := fmt.Sprintf("disk full: the session's disk space (/mnt/data and /tmp together) is at its limit (%s); writes fail with \"No space left on device\" until files are deleted", what)
	if prev != "" {
		msg += "; " + prev
	}
	return msg
}

// lost reports whether the session's sandbox has stopped, and if so
// removes the session.
func (s *Session) lost() bool {
	select {
	case <-s.sb.Done():
	case <-time.After(500 * time.Millisecond):
		return false
	}
	s.pool.remove(s, "sandbox stopped")
	return true
}

// agentError turns a failure to reach the agent into ErrSessionLost when
// the sandbox is gone, so callers can tell the user to start again.
func (s *Session) agentError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, agent.ErrUnavailable) && s.lost() {
		return fmt.Errorf("%w: %q; its state is gone, a new request starts a new session", ErrSessionLost, s.ID)
	}
	if errors.Is(err, agent.ErrProtocol) {
		// What answers in the sandbox cannot be trusted any more (it may
		// be the sandbox's own code posing as the agent): end the session.
		s.pool.log.Warn("sandbox agent broke the protocol; destroying the session", "session", s.ID, "err", err)
		s.pool.remove(s, "agent protocol violation")
		return fmt.Errorf("%w: %q: its sandbox stopped answering as it should and was destroyed; its state is gone, a new request starts a new session", ErrSessionLost, s.ID)
	}
	return err
}

// ListFiles lists a directory of the workspace ("" for /mnt/data).
func (s *Session) ListFiles(ctx context.Context, dir string) ([]agent.FileInfo, error) {
	defer s.begin()()
	list, err := s.sb.Agent().List(ctx, dir)
	return list, s.agentError(err)
}

// OpenFile opens a workspace file for reading. The session counts as busy
// until the reader is closed.
func (s *Session) OpenFile(ctx context.Context, name string) (io.ReadCloser, int64, error) {
	end := s.begin()
	rc, n, err := s.sb.Agent().Open(ctx, name)
	if err != nil {
		end()
		return nil, 0, s.agentError(err)
	}
	return &endReader{ReadCloser: rc, end: end}, n, nil
}

// WriteFile stores r as a workspace file.
func (s *Session) WriteFile(ctx context.Context, name string, r io.Reader) (agent.FileInfo, error) {
	defer s.begin()()
	info, err := s.sb.Agent().Write(ctx, name, r)
	return info, s.agentError(err)
}

// RemoveFile deletes a workspace file.
func (s *Session) RemoveFile(ctx context.Context, name string) error {
	defer s.begin()()
	return s.agentError(s.sb.Agent().Remove(ctx, name))
}

type endReader struct {
	io.ReadCloser
	end  func()
	once sync.Once
}

func (r *endReader) Close() error {
	err := r.ReadCloser.Close()
	r.once.Do(r.end)
	return err
}
