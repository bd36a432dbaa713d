package sandboxtest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/sandbox"
)

// BenchStart measures a warm Start (one sandbox was started and destroyed
// before the timer starts: the disk template exists, the page cache is
// warm) until the agent answers, then Destroy, on root (nil: the host's).
func BenchStart(b *testing.B, rt sandbox.Runtime, root *sandbox.Root) {
	ctx := context.Background()
	one := func(i int) {
		sb, err := rt.Start(ctx, sandbox.Spec{ID: fmt.Sprintf("bench-%d", i), Root: root})
		if err != nil {
			b.Fatal(err)
		}
		if err := sb.Agent().Ping(ctx); err != nil {
			b.Fatal(err)
		}
		_ = sb.Destroy(ctx)
	}
	one(-1)
	for i := 0; b.Loop(); i++ {
		one(i)
	}
}

// BenchShared starts n sandboxes on one image root, each having written a
// file to its root, and reports what each costs the host in memory (its
// cgroup's), how much of its own disk its file system counts as used
// (ext4's inode tables included, which the sparse image does not hold on
// the host), and the shared root's size once.
func BenchShared(b *testing.B, rt sandbox.Runtime, root *sandbox.Root, n int) {
	ctx := context.Background()
	for b.Loop() {
		var boxes []sandbox.Sandbox
		for i := range n {
			sb, err := rt.Start(ctx, sandbox.Spec{ID: fmt.Sprintf("shared-%d", i), Root: root})
			if err != nil {
				b.Fatal(err)
			}
			boxes = append(boxes, sb)
			if out := Shell(b, sb, "echo hi > /home/app/f && python3 -c pass"); out.ExitCode != 0 {
				b.Fatalf("%+v", out)
			}
		}
		var mem, disk uint64
		for _, sb := range boxes {
			st := sb.(sandbox.StatsReporter).Stats()
			mem += st.MemoryBytes
			disk += uint64(st.DiskBytes)
		}
		b.ReportMetric(float64(mem)/float64(n)/(1<<20), "MiB-mem/sandbox")
		b.ReportMetric(float64(disk)/float64(n)/(1<<20), "MiB-disk-statfs/sandbox")
		for _, sb := range boxes {
			_ = sb.Destroy(ctx)
		}
	}
	if out, err := exec.Command("du", "-sm", root.Dir).Output(); err == nil {
		mb, _ := strconv.Atoi(strings.Fields(string(out))[0])
		b.ReportMetric(float64(mb), "MiB-shared-root")
	}
}

// Latencies are measured durations.
type Latencies []time.Duration

// P is the q-quantile (0.5: the median) of l, by the nearest rank.
func (l Latencies) P(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	return s[min(len(s)-1, max(0, int(math.Ceil(q*float64(len(s))))-1))]
}

var echo = agent.ExecRequest{Language: agent.Shell, Code: "echo hi"}

// Echo runs echo in sb's shell and fails tb unless it answers "hi".
func Echo(tb testing.TB, sb sandbox.Sandbox) {
	tb.Helper()
	out, err := sb.Agent().Exec(context.Background(), echo, nil)
	if err != nil || out.Stdout != "hi\n" {
		tb.Fatalf("echo: %v %+v", err, out)
	}
}

// MeasureStartEcho starts n sandboxes of spec one after the other, each
// timed from Start until its first echo answers, and destroyed (untimed)
// before the next; one more is started first, untimed, so that images and
// caches are warm.
func MeasureStartEcho(tb testing.TB, rt sandbox.Runtime, spec sandbox.Spec, n int) Latencies {
	tb.Helper()
	ctx := context.Background()
	var l Latencies
	for i := -1; i < n; i++ {
		s := spec
		s.ID = fmt.Sprintf("%s-%d-%s", spec.ID, i+1, strings.ToLower(rand.Text()[:4]))
		t0 := time.Now()
		sb, err := rt.Start(ctx, s)
		if err != nil {
			tb.Fatal(err)
		}
		Echo(tb, sb)
		if i >= 0 {
			l = append(l, time.Since(t0))
		}
		_ = sb.Destroy(ctx)
	}
	return l
}

// MeasureFirstEcho starts n sandboxes of spec ahead of time (a warm
// pool's) and times the first echo on each: what a warm acquire costs
// the caller after the pool hands out a sandbox.
func MeasureFirstEcho(tb testing.TB, rt sandbox.Runtime, spec sandbox.Spec, n int) Latencies {
	tb.Helper()
	boxes := startMany(tb, rt, spec, n)
	var l Latencies
	for _, sb := range boxes {
		t0 := time.Now()
		Echo(tb, sb)
		l = append(l, time.Since(t0))
	}
	destroyAll(boxes)
	return l
}

// MeasureEcho times n echos in one sandbox's session (after one untimed).
func MeasureEcho(tb testing.TB, sb sandbox.Sandbox, n int) Latencies {
	tb.Helper()
	Echo(tb, sb)
	l := make(Latencies, 0, n)
	for range n {
		t0 := time.Now()
		Echo(tb, sb)
		l = append(l, time.Since(t0))
	}
	return l
}

// MeasureConcurrentStarts starts n sandboxes of spec at once and returns
// how long it took until every one's agent answered an echo.
func MeasureConcurrentStarts(tb testing.TB, rt sandbox.Runtime, spec sandbox.Spec, n int) time.Duration {
	tb.Helper()
	t0 := time.Now()
	boxes := startMany(tb, rt, spec, n)
	d := time.Since(t0)
	destroyAll(boxes)
	return d
}

// startMany starts n sandboxes of spec at once, each answering an echo.
func startMany(tb testing.TB, rt sandbox.Runtime, spec sandbox.Spec, n int) []sandbox.Sandbox {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	boxes := make([]sandbox.Sandbox, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			s := spec
			s.ID = fmt.Sprintf("%s-%d-%s", spec.ID, i, strings.ToLower(rand.Text()[:4]))
			sb, err := rt.Start(ctx, s)
			if err == nil {
				var out *agent.Output
				if out, err = sb.Agent().Exec(ctx, echo, nil); err == nil && out.Stdout != "hi\n" {
					err = fmt.Errorf("echo: %+v", out)
				}
			}
			boxes[i], errs[i] = sb, err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		destroyAll(boxes)
		tb.Fatal(err)
	}
	return boxes
}

func destroyAll(boxes []sandbox.Sandbox) {
	var wg sync.WaitGroup
	for _, sb := range boxes {
		if sb != nil {
			wg.Go(func() { _ = sb.Destroy(context.Background()) })
		}
	}
	wg.Wait()
}
