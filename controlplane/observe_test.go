package controlplane

import (
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestCollectAppMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "berth_app_requests_total"}, []string{"app", "revision", "method", "tool", "code"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "berth_app_request_duration_seconds", Buckets: []float64{0.001, 0.01, 0.1, 1}}, []string{"app", "revision", "method"})
	reg.MustRegister(requests, duration)
	requests.WithLabelValues("a", "a--r1", "tools/call", "add", "200").Add(8)
	requests.WithLabelValues("a", "a--r2", "tools/call", "add", "500").Add(2)
	requests.WithLabelValues("a", "a--r1", "initialize", "", "200").Add(5)
	requests.WithLabelValues("b", "b--r1", "tools/call", "other", "404").Add(1)
	for range 90 {
		duration.WithLabelValues("a", "a--r1", "tools/call").Observe(0.005) // 0.001–0.01
	}
	for range 10 {
		duration.WithLabelValues("a", "a--r2", "tools/call").Observe(0.5) // 0.1–1
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	all := collect(fams)
	a := all["a"]
	if a.Requests != 15 || a.Errors != 2 {
		t.Fatalf("app a: %d requests, %d errors", a.Requests, a.Errors)
	}
	if len(a.Tools) != 1 || a.Tools[0] != (ToolMetrics{Tool: "add", Calls: 10, Errors: 2}) {
		t.Fatalf("app a tools: %+v", a.Tools)
	}
	if len(a.Methods) != 1 || a.Methods[0].Count != 100 {
		t.Fatalf("app a methods: %+v", a.Methods)
	}
	// p50: rank 50 of the 90 in (1 ms, 10 ms]; p99: rank 99, 9th of 10 in (100 ms, 1 s].
	if p50 := a.Methods[0].P50Ms; math.Abs(p50-(1+9*50.0/90)) > 0.01 {
		t.Errorf("p50 = %.3f ms", p50)
	}
	if p99 := a.Methods[0].P99Ms; math.Abs(p99-(100+900*9.0/10)) > 0.01 {
		t.Errorf("p99 = %.3f ms", p99)
	}
	if b := all["b"]; b.Errors != 1 || b.Tools[0].Errors != 1 {
		t.Errorf("app b: %+v", b)
	}
}

func TestSamplerBaseline(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	totals := func(n int64) map[string][2]int64 { return map[string][2]int64{"a": {n, 0}} }
	tests := []struct {
		name     string
		asks     []time.Duration // when metrics were asked for, after start
		now      time.Duration
		wantFrom time.Duration
		wantBase int64 // requests in the baseline (-1: none, counted from the start)
	}{
		{"young server counts from its start", []time.Duration{10 * time.Minute}, 30 * time.Minute, 0, -1},
		{"an hour-old sample is the baseline", []time.Duration{5 * time.Minute, 30 * time.Minute, 70 * time.Minute}, 90 * time.Minute, 30 * time.Minute, 30},
		{"no sample an hour old: the oldest", []time.Duration{100 * time.Minute}, 120 * time.Minute, 100 * time.Minute, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &sampler{started: t0}
			for _, d := range tt.asks {
				s.baseline(t0.Add(d), totals(int64(d/time.Minute)))
			}
			from, base := s.baseline(t0.Add(tt.now), totals(int64(tt.now/time.Minute)))
			if !from.Equal(t0.Add(tt.wantFrom)) {
				t.Errorf("from %s, want %s", from.Sub(t0), tt.wantFrom)
			}
			got := int64(-1)
			if base != nil {
				got = base["a"][0]
			}
			if got != tt.wantBase {
				t.Errorf("baseline %d requests, want %d", got, tt.wantBase)
			}
		})
	}
}
