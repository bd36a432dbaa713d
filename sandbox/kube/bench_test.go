package kube_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/sandbox"
)

// BenchmarkKube measures, per runtime class, a warm start (images on the
// node: create the Pod's objects until the agent answers) and an echo in
// a running sandbox, with their p50 and p99:
//
//	go test -run '^$' -bench Kube -benchtime 10x ./sandbox/kube/
func BenchmarkKube(b *testing.B) {
	for _, c := range classes {
		b.Run(c.name+"/start", func(b *testing.B) {
			rt := newRuntime(b, c.rc, nil)
			start(b, rt, sandbox.Spec{ID: "warm"}) // pulls the images
			var d []time.Duration
			b.ResetTimer()
			for i := range b.N {
				t0 := time.Now()
				sb, err := rt.Start(context.Background(), sandbox.Spec{ID: fmt.Sprintf("bench-%d-%d", time.Now().UnixNano()%1e6, i)})
				if err != nil {
					b.Fatal(err)
				}
				d = append(d, time.Since(t0))
				b.StopTimer()
				_ = sb.Destroy(context.Background())
				b.StartTimer()
			}
			report(b, d)
		})
		b.Run(c.name+"/echo", func(b *testing.B) {
			rt := newRuntime(b, c.rc, nil)
			sb := start(b, rt, sandbox.Spec{ID: "echo"})
			req := agent.ExecRequest{Language: agent.Shell, Code: "echo hi"}
			_, _ = sb.Agent().Exec(context.Background(), req, nil)
			var d []time.Duration
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				out, err := sb.Agent().Exec(context.Background(), req, nil)
				if err != nil || out.Stdout != "hi\n" {
					b.Fatal(err, out)
				}
				d = append(d, time.Since(t0))
			}
			report(b, d)
		})
	}
}

func report(b *testing.B, d []time.Duration) {
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(d[min(len(d)-1, len(d)*99/100)].Microseconds())/1000, "p99-ms")
}
