package kube_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testutil"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/bwrap"
	"github.com/berth-dev/berth/sandbox/gvisor"
	"github.com/berth-dev/berth/sandbox/internal/local"
	"github.com/berth-dev/berth/sandbox/sandboxtest"
)

// BenchmarkSideBySide measures, in one run, the local drivers (bwrap and
// gVisor on this host, on the test Debian image's root) and Pods (runc and
// gVisor) on the test cluster, with the suite's shared bodies:
//
//   - start+echo: Start of a sandbox (images warm) until its first echo;
//   - acquire+echo: the first echo on a sandbox started ahead, as a warm
//     pool hands one out;
//   - echo: an echo in a session;
//   - starts/s: N sandboxes started at once, until each answered an echo.
//
// Sandboxes have no egress (a Pod's start includes its egress gate) but
// in the row kube-runc-egress.
//
// It logs a table of p50/p99 and reports the metrics; it asserts no times:
//
//	BERTH_KUBE=1 go test -v -run '^$' -bench SideBySide -benchtime 1x ./sandbox/kube/
func BenchmarkSideBySide(b *testing.B) {
	testutil.RequireRoot(b)
	setup(b)
	const starts, echos, concurrent = 10, 200, 10
	drivers := []struct {
		name string
		rt   func(b *testing.B) sandbox.Runtime
		spec sandbox.Spec
	}{
		{"bwrap", localBwrap, sandbox.Spec{Root: sandboxtest.DebianRoot(b)}},
		{"gvisor", localGvisor, sandbox.Spec{Root: sandboxtest.DebianRoot(b)}},
		{"kube-runc", func(b *testing.B) sandbox.Runtime { return newRuntime(b, "", nil) }, sandbox.Spec{}},
		{"kube-gvisor", func(b *testing.B) sandbox.Runtime { return newRuntime(b, "gvisor", nil) }, sandbox.Spec{}},
		// With egress a Pod has no egress gate (an init container that
		// waits until its NetworkPolicy is enforced): what the gate costs.
		{"kube-runc-egress", func(b *testing.B) sandbox.Runtime { return newRuntime(b, "", nil) }, sandbox.Spec{Egress: true}},
	}
	var table strings.Builder
	fmt.Fprintf(&table, "\n| driver | start+echo p50 | p99 | acquire+echo p50 | p99 | echo p50 | p99 | %d at once | starts/s |\n|---|---|---|---|---|---|---|---|---|\n", concurrent)
	for _, d := range drivers {
		b.Run(d.name, func(b *testing.B) {
			for b.Loop() {
				rt := d.rt(b)
				spec := d.spec
				spec.ID = "sbs"
				se := sandboxtest.MeasureStartEcho(b, rt, spec, starts)
				ae := sandboxtest.MeasureFirstEcho(b, rt, spec, starts)
				sb := sandboxtest.Start(b, rt, spec)
				ec := sandboxtest.MeasureEcho(b, sb, echos)
				_ = sb.Destroy(context.Background())
				wall := sandboxtest.MeasureConcurrentStarts(b, rt, spec, concurrent)
				rate := float64(concurrent) / wall.Seconds()
				for _, m := range []struct {
					l    sandboxtest.Latencies
					name string
				}{{se, "start+echo"}, {ae, "acquire+echo"}, {ec, "echo"}} {
					b.ReportMetric(ms(m.l.P(0.5)), m.name+"-p50-ms")
					b.ReportMetric(ms(m.l.P(0.99)), m.name+"-p99-ms")
				}
				b.ReportMetric(rate, "starts/s")
				fmt.Fprintf(&table, "| %s | %.0f ms | %.0f ms | %.2f ms | %.2f ms | %.2f ms | %.2f ms | %.2f s | %.1f |\n", d.name,
					ms(se.P(0.5)), ms(se.P(0.99)), ms(ae.P(0.5)), ms(ae.P(0.99)), ms(ec.P(0.5)), ms(ec.P(0.99)), wall.Seconds(), rate)
			}
		})
	}
	b.Log(table.String())
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// localOptions are a local driver's options for a benchmark: state of its
// own, the agent built from this tree.
func localOptions(b *testing.B, prefix string) local.Options {
	return local.Options{Instance: prefix + "kdrv2sbs", StateDir: b.TempDir(), AgentPath: localAgent(b)}
}

func localBwrap(b *testing.B) sandbox.Runtime {
	testutil.RequireTool(b, "bwrap")
	rt, err := bwrap.New(bwrap.Options{Options: localOptions(b, "b")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = rt.Cleanup(context.Background()) })
	return rt
}

func localGvisor(b *testing.B) sandbox.Runtime {
	runsc := filepath.Join(moduleRoot(b), ".bin", "runsc")
	if _, err := os.Stat(runsc); err != nil {
		runsc = testutil.RequireTool(b, "runsc")
	}
	rt, err := gvisor.New(gvisor.Options{Options: localOptions(b, "g"), Runsc: runsc})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = rt.Cleanup(context.Background()) })
	return rt
}

var agentBin struct {
	sync.Once
	path string
	err  error
}

// localAgent builds berth-agent (static) once for the local drivers.
func localAgent(b *testing.B) string {
	agentBin.Do(func() {
		dir, err := os.MkdirTemp("", "berth-kdrv2-agent-")
		if err != nil {
			agentBin.err = err
			return
		}
		agentBin.path = filepath.Join(dir, "berth-agent")
		cmd := exec.Command("go", "build", "-trimpath", "-o", agentBin.path, "./cmd/berth-agent")
		cmd.Dir = moduleRoot(b)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			agentBin.err = fmt.Errorf("go build ./cmd/berth-agent: %v\n%s", err, out)
		}
	})
	if agentBin.err != nil {
		b.Fatal(agentBin.err)
	}
	return agentBin.path
}
