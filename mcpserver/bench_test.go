package mcpserver_test

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/mcpserver"
	"github.com/berth-dev/berth/pool"
)

// Benchmarks over real HTTP on loopback with the go-sdk client, against a
// real bwrap pool. Each reports p50 and p99 latencies besides ns/op:
//
//	go test ./mcpserver -run '^$' -bench . -benchtime 2000x
var benchVersions = []string{"2025-11-25", "2026-07-28"}

// latencies collects per-operation times and reports percentiles.
type latencies []time.Duration

func (l latencies) report(b *testing.B) {
	if len(l) == 0 {
		return
	}
	slices.Sort(l)
	q := func(p float64) float64 { return float64(l[int(p*float64(len(l)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
}

func benchClient(b *testing.B, e *env, name, key, version string) *client {
	// One keep-alive connection per client, as a real client would hold.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 16
	return mustConnect(b, e.url(name), key, connectOpts{version: version, base: tr})
}

// BenchmarkLaunchAndEcho is launchShell and a first echo in the new
// environment, with a warm sandbox ready (the pool refills between
// iterations, outside the timer); the environment is closed after.
func BenchmarkLaunchAndEcho(b *testing.B) {
	e := newEnv(b, mcpserver.Options{})
	key := e.create(b, pool.Config{Name: "p", Ready: 4})
	p := e.mustPool(b, "p")
	for _, v := range benchVersions {
		b.Run(v, func(b *testing.B) {
			c := benchClient(b, e, "p", key, v)
			var lat latencies
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				waitWarm(b, p, 1)
				b.StartTimer()
				start := time.Now()
				id := c.launch()
				if r := c.sh(id, "echo hi"); r.Stdout != "hi\n" {
					b.Fatalf("echo: %+v", r)
				}
				lat = append(lat, time.Since(start))
				b.StopTimer()
				c.call(mcpserver.ToolClose, map[string]any{"environmentId": id})
				b.StartTimer()
			}
			lat.report(b)
		})
	}
}

func waitWarm(b *testing.B, p *pool.Pool, n int) {
	deadline := time.Now().Add(30 * time.Second)
	for p.Stats().Warm < n {
		if time.Now().After(deadline) {
			b.Fatal("the pool did not refill")
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkEcho is echo in an existing environment.
func BenchmarkEcho(b *testing.B) {
	benchExec(b, pool.TypeShell, func(c *client, id string) {
		if r := c.sh(id, "echo hi"); r.Stdout != "hi\n" {
			b.Fatalf("echo: %+v", r)
		}
	})
}

// BenchmarkPython is a Python statement in an existing environment.
func BenchmarkPython(b *testing.B) {
	benchExec(b, pool.TypePython, func(c *client, id string) {
		if r := c.py(id, "x = 1 + 1"); r.Status != "Success" {
			b.Fatalf("python: %+v", r)
		}
	})
}

func benchExec(b *testing.B, typ string, op func(*client, string)) {
	e := newEnv(b, mcpserver.Options{})
	key := e.create(b, pool.Config{Name: "p", Type: typ})
	for _, v := range benchVersions {
		b.Run(v, func(b *testing.B) {
			c := benchClient(b, e, "p", key, v)
			id := c.launch()
			op(c, id) // warm up
			lat := make(latencies, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				op(c, id)
				lat = append(lat, time.Since(start))
			}
			lat.report(b)
		})
	}
}

// BenchmarkConcurrentClients is tool calls (echo) per second with 16
// clients at once, each in its own environment.
func BenchmarkConcurrentClients(b *testing.B) {
	const n = 16
	e := newEnv(b, mcpserver.Options{})
	key := e.create(b, pool.Config{Name: "p", Ready: 4, Max: 2 * n})
	for _, v := range benchVersions {
		b.Run(v, func(b *testing.B) {
			clients := make([]*client, n)
			ids := make([]string, n)
			for i := range clients {
				clients[i] = benchClient(b, e, "p", key, v)
				ids[i] = clients[i].launch()
				clients[i].sh(ids[i], "true")
			}
			var mu sync.Mutex
			var lat latencies
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					mine := make(latencies, 0, b.N/n+1)
					for j := i; j < b.N; j += n {
						t0 := time.Now()
						r, err := clients[i].try(mcpserver.ToolRunShell, map[string]any{"environmentId": ids[i], "shellCommand": "echo hi"}, nil)
						if err != nil || r.IsError {
							panic(fmt.Sprint(err, r))
						}
						mine = append(mine, time.Since(t0))
					}
					mu.Lock()
					lat = append(lat, mine...)
					mu.Unlock()
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
			lat.report(b)
			for i := range clients {
				clients[i].call(mcpserver.ToolClose, map[string]any{"environmentId": ids[i]})
			}
		})
	}
}

// BenchmarkEchoPlain is echo in an existing environment as Azure's
// tutorials send it: an independent POST without a session, Accept or
// MCP-Protocol-Version, answered as one JSON body.
func BenchmarkEchoPlain(b *testing.B) {
	e := newEnv(b, mcpserver.Options{})
	key := e.create(b, pool.Config{Name: "p"})
	c := benchClient(b, e, "p", key, "2025-11-25")
	id := c.launch()
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":"3","method":"tools/call","params":{"name":%q,"arguments":{"environmentId":%q,"shellCommand":"echo hi"}}}`, mcpserver.ToolRunShell, id)
	hc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	post := func() {
		req, _ := http.NewRequest(http.MethodPost, e.url("p"), strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Ms-Apikey", key)
		resp, err := hc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(out), `"stdout":"hi\n"`) {
			b.Fatalf("%d %s", resp.StatusCode, out)
		}
	}
	post()
	lat := make(latencies, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		post()
		lat = append(lat, time.Since(start))
	}
	lat.report(b)
}
