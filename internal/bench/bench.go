// Package bench measures Berth's sandboxes and sessions on this machine:
// cold start next to the bare sandboxing tool, warm acquire + first echo,
// executions in an existing session, and idle memory per session. It backs
// "berth bench". It measures; it asserts nothing.
package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/pool"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/store"
)

// Options configure a run.
type Options struct {
	// Runtimes to measure, by name, with the command line of the bare tool
	// to compare cold starts with.
	Runtimes []Runtime
	// Iterations of each latency measurement (default 200; cold starts use
	// a tenth, at least 10).
	Iterations int
	// IdleSessions is how many idle sessions to hold at once for the memory
	// measurement, per runtime name (default 100).
	IdleSessions map[string]int
	// Progress, if set, receives a line per step.
	Progress io.Writer
	// Images and Image, if set, add warm acquire + first echo on a pool
	// on that image (an image Images holds, by digest), measured in turns
	// with the host-root pool's.
	Images pool.Images
	Image  *image.Image
}

// Runtime is a driver to measure.
type Runtime struct {
	Name    string
	Runtime sandbox.Runtime
	// Bare starts the bare tool once (e.g. bwrap … /bin/true).
	Bare func(ctx context.Context) error
}

// Latency summarizes a series of durations.
type Latency struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50Ms"`
	P99 float64 `json:"p99Ms"`
	Min float64 `json:"minMs"`
}

func summarize(d []time.Duration) Latency {
	if len(d) == 0 {
		return Latency{}
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	ms := func(x time.Duration) float64 { return float64(x.Microseconds()) / 1000 }
	at := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))] }
	return Latency{N: len(d), P50: ms(at(0.5)), P99: ms(at(0.99)), Min: ms(d[0])}
}

// Result is one runtime's numbers.
type Result struct {
	Runtime         string  `json:"runtime"`
	BareStart       Latency `json:"bareToolStart"`
	ColdStart       Latency `json:"coldSandboxStart"`
	ColdOverBare    float64 `json:"coldOverBareP50"`
	WarmAcquireEcho Latency `json:"warmAcquireFirstEcho"`
	// WarmAcquireEchoImage is the same on a pool on Options.Image.
	WarmAcquireEchoImage *Latency `json:"warmAcquireFirstEchoImage,omitempty"`
	Echo                 Latency  `json:"echoInSession"`
	PythonPrint          Latency  `json:"pythonPrintInSession"`
	IdleSessions         int      `json:"idleSessions"`
	IdleCgroupBytes      int64    `json:"idleMemoryPerSessionCgroupBytes"`
	IdleSystemBytes      int64    `json:"idleMemoryPerSessionSystemBytes"`
	SessionsIn24GiB      int64    `json:"sessionsThatFitIn24GiB"`
	IdleStartDuration    float64  `json:"idleSessionsStartSeconds"`
	IdleStartFailures    int      `json:"idleSessionsStartFailures"`
}

// Run measures every runtime in turn.
func Run(ctx context.Context, o Options) ([]Result, error) {
	if o.Iterations <= 0 {
		o.Iterations = 200
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	var out []Result
	for _, rt := range o.Runtimes {
		r, err := runOne(ctx, o, rt)
		if err != nil {
			return out, fmt.Errorf("%s: %w", rt.Name, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func runOne(ctx context.Context, o Options, rt Runtime) (Result, error) {
	res := Result{Runtime: rt.Name}
	say := func(f string, a ...any) { fmt.Fprintf(o.Progress, "[%s] "+f+"\n", append([]any{rt.Name}, a...)...) }
	cold := max(10, o.Iterations/10)

	// Cold start, interleaved with the bare tool so both see the same load.
	say("cold start vs bare tool (%d each)", cold)
	var bare, starts []time.Duration
	for i := 0; i < cold; i++ {
		t0 := time.Now()
		if err := rt.Bare(ctx); err != nil {
			return res, fmt.Errorf("bare tool: %w", err)
		}
		bare = append(bare, time.Since(t0))
		t0 = time.Now()
		sb, err := rt.Runtime.Start(ctx, sandbox.Spec{ID: fmt.Sprintf("bench-cold-%d", i)})
		if err != nil {
			return res, err
		}
		starts = append(starts, time.Since(t0))
		_ = sb.Destroy(ctx)
	}
	res.BareStart, res.ColdStart = summarize(bare), summarize(starts)
	if res.BareStart.P50 > 0 {
		res.ColdOverBare = res.ColdStart.P50 / res.BareStart.P50
	}

	dir, err := os.MkdirTemp("", "berth-bench-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	st, err := store.Open(dir)
	if err != nil {
		return res, err
	}
	defer st.Close()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := pool.NewManager(pool.Options{Store: st, Runtimes: map[string]sandbox.Runtime{rt.Name: rt.Runtime}, Logger: quiet, Images: o.Images})
	defer m.Close()

	// Warm acquire + first echo: a new identifier takes a warm sandbox.
	warmN := max(20, o.Iterations/4)
	say("warm acquire + first echo (%d)", warmN)
	p, _, err := m.Create(ctx, pool.Config{Name: "bench-sh", Runtime: rt.Name, Ready: 4, Max: 100})
	if err != nil {
		return res, err
	}
	pools := []*pool.Pool{p}
	if o.Image != nil {
		say("… in turns with a pool on image %s", o.Image.Ref)
		ip, _, err := m.Create(ctx, pool.Config{Name: "bench-img", Runtime: rt.Name, Ready: 4, Max: 100, Image: o.Image.Ref, ImageDigest: o.Image.Digest})
		if err != nil {
			return res, err
		}
		defer m.Delete(context.WithoutCancel(ctx), "bench-img")
		pools = append(pools, ip)
	}
	warm := make([][]time.Duration, len(pools))
	for i := 0; i < warmN; i++ {
		for k, p := range pools {
			d, err := warmEcho(ctx, p, fmt.Sprintf("warm-%06d", i))
			if err != nil {
				return res, err
			}
			warm[k] = append(warm[k], d)
		}
	}
	res.WarmAcquireEcho = summarize(warm[0])
	if len(warm) > 1 {
		l := summarize(warm[1])
		res.WarmAcquireEchoImage = &l
	}

	say("echo in a session (%d)", o.Iterations)
	s, err := p.Session(ctx, "bench-echo")
	if err != nil {
		return res, err
	}
	if res.Echo, err = repeat(ctx, o.Iterations, func() error {
		x, err := s.Exec(ctx, agent.Shell, "echo hi", nil, pool.ExecOptions{})
		if err == nil && x.Stdout != "hi\n" {
			err = fmt.Errorf("echo returned %q", x.Stdout)
		}
		return err
	}); err != nil {
		return res, err
	}

	say("python print(x) in a session (%d)", o.Iterations)
	py, _, err := m.Create(ctx, pool.Config{Name: "bench-py", Type: pool.TypePython, Runtime: rt.Name, Ready: 1})
	if err != nil {
		return res, err
	}
	ps, err := py.Session(ctx, "bench-python")
	if err != nil {
		return res, err
	}
	if _, err := ps.Exec(ctx, agent.Python, "x = 42", nil, pool.ExecOptions{}); err != nil {
		return res, err
	}
	if res.PythonPrint, err = repeat(ctx, o.Iterations, func() error {
		x, err := ps.Exec(ctx, agent.Python, "print(x)", nil, pool.ExecOptions{})
		if err == nil && x.Stdout != "42\n" {
			err = fmt.Errorf("print(x) returned %q %q", x.Stdout, x.Stderr)
		}
		return err
	}); err != nil {
		return res, err
	}
	_ = m.Delete(ctx, "bench-py")
	_ = m.Delete(ctx, "bench-sh")

	n := o.IdleSessions[rt.Name]
	if n <= 0 {
		n = 100
	}
	say("memory of %d idle sessions", n)
	if err := idleMemory(ctx, m, rt.Name, n, &res, say); err != nil {
		return res, err
	}
	return res, nil
}

// warmEcho takes a warm sandbox of p for a new identifier and runs its
// first echo, timed; then it ends the session.
func warmEcho(ctx context.Context, p *pool.Pool, id string) (time.Duration, error) {
	if err := waitWarm(ctx, p, 1); err != nil {
		return 0, err
	}
	t0 := time.Now()
	s, err := p.Session(ctx, id)
	if err != nil {
		return 0, err
	}
	x, err := s.Exec(ctx, agent.Shell, "echo hi", nil, pool.ExecOptions{})
	if err != nil {
		return 0, err
	}
	d := time.Since(t0)
	if x.Stdout != "hi\n" {
		return 0, fmt.Errorf("echo returned %q", x.Stdout)
	}
	_ = p.DeleteSession(id)
	return d, nil
}

func repeat(ctx context.Context, n int, f func() error) (Latency, error) {
	d := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		if err := ctx.Err(); err != nil {
			return Latency{}, err
		}
		t0 := time.Now()
		if err := f(); err != nil {
			return Latency{}, err
		}
		d = append(d, time.Since(t0))
	}
	return summarize(d), nil
}

func waitWarm(ctx context.Context, p *pool.Pool, n int) error {
	deadline := time.Now().Add(60 * time.Second)
	for p.Stats().Warm < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("no warm sandbox after 60s")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
	return nil
}

// idleMemory starts n sessions that have each run one echo, then measures
// what they hold: the kernel's accounting per cgroup, and the drop of the
// machine's available memory.
func idleMemory(ctx context.Context, m *pool.Manager, rtName string, n int, res *Result, say func(string, ...any)) error {
	dropCaches()
	before := memAvailable()
	p, _, err := m.Create(ctx, pool.Config{Name: "bench-idle", Runtime: rtName, Ready: 0, Max: n, MemoryBytes: 128 << 20})
	if err != nil {
		return err
	}
	t0 := time.Now()
	var sessions []*pool.Session
	for i := 0; i < n; i++ {
		s, err := p.Session(ctx, fmt.Sprintf("idle-%06d", i))
		if err == nil {
			_, err = s.Exec(ctx, agent.Shell, "echo hi", nil, pool.ExecOptions{})
		}
		if err != nil {
			res.IdleStartFailures++
			say("session %d: %v", i, err)
			if res.IdleStartFailures > 10 {
				break
			}
			continue
		}
		sessions = append(sessions, s)
		if (i+1)%100 == 0 {
			say("%d sessions up", i+1)
		}
	}
	res.IdleStartDuration = time.Since(t0).Seconds()
	res.IdleSessions = len(sessions)
	time.Sleep(2 * time.Second) // let the agents' heaps settle
	dropCaches()
	after := memAvailable()
	var cg int64
	for _, s := range sessions {
		cg += int64(s.Stats().MemoryBytes)
	}
	if k := int64(len(sessions)); k > 0 {
		res.IdleCgroupBytes = cg / k
		res.IdleSystemBytes = (before - after) / k
		if res.IdleSystemBytes > 0 {
			res.SessionsIn24GiB = (24 << 30) / res.IdleSystemBytes
		}
	}
	say("removing idle sessions")
	return m.Delete(ctx, "bench-idle")
}

func memAvailable() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// dropCaches makes the page cache's share of MemAvailable steady, so the
// difference before and after measures what the sessions hold.
func dropCaches() {
	_ = exec.Command("sync").Run()
	_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0)
}

// BareBwrap starts bubblewrap with the machine notes' flags around /bin/true.
func BareBwrap(ctx context.Context) error {
	return exec.CommandContext(ctx, "bwrap", "--unshare-all", "--die-with-parent", "--new-session",
		"--cap-drop", "ALL", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
		"--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin",
		"--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "/bin/true").Run()
}

// BareRunsc returns a function that runs /bin/true with "runsc do".
func BareRunsc(runsc string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		root, err := os.MkdirTemp("", "berth-bench-runsc-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(root)
		out, err := exec.CommandContext(ctx, runsc, "--root", filepath.Join(root, "state"), "--network", "none",
			"--platform", "systrap", "do", "/bin/true").CombinedOutput()
		if err != nil {
			return fmt.Errorf("runsc do: %v: %s", err, out)
		}
		return nil
	}
}
