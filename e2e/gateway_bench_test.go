package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/berth-dev/berth/internal/testutil"
)

// BenchmarkGateway measures MCP tools/call throughput and latency with 16
// concurrent go-sdk clients, side by side in one run: direct to the app,
// through Caddy's reverse_proxy to the same app process, and through
// Berth's gateway to a replica of the same server in a sandbox (gateway →
// agent tunnel → app). Run it with `make bench`; it needs Caddy in .bin.
//
//	go test ./e2e -run '^$' -bench Gateway -benchtime 3000x
func BenchmarkGateway(b *testing.B) {
	caddy := filepath.Join(testutil.ModuleRoot(), ".bin", "caddy")
	if _, err := os.Stat(caddy); err != nil {
		b.Skip("Caddy is not in .bin (make bench installs it)")
	}
	dir := everythingServer(b)

	// The upstream for direct and Caddy: one process on loopback.
	port := freePort(b)
	up := exec.Command(filepath.Join(dir, "everything-server"), "-http", "127.0.0.1:"+strconv.Itoa(port), "-stateless=false")
	if err := up.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = up.Process.Kill(); _ = up.Wait() }()
	waitTCP(b, port)

	cport := freePort(b)
	cfg := fmt.Sprintf(`{"admin":{"disabled":true},"logging":{"logs":{"default":{"level":"ERROR"}}},"apps":{"http":{"servers":{"b":{"listen":["127.0.0.1:%d"],"routes":[{"handle":[{"handler":"reverse_proxy","flush_interval":-1,"upstreams":[{"dial":"127.0.0.1:%d"}]}]}]}}}}}`, cport, port)
	cfgFile := filepath.Join(b.TempDir(), "caddy.json")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	cad := exec.Command(caddy, "run", "--config", cfgFile)
	if err := cad.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cad.Process.Kill(); _ = cad.Wait() }()
	waitTCP(b, cport)

	srv := startBerth(b, "")
	srv.cli("app", "deploy", "bench", "--dir", dir, "--command", everythingCommand, "--min", "1", "--max", "1",
		"--concurrency", "1000", "--cpu", "2", "--memory", "1Gi")
	srv.waitReplicas("bench", 1)

	for _, target := range []struct{ name, url string }{
		{"direct", fmt.Sprintf("http://127.0.0.1:%d/mcp", port)},
		{"berth", srv.info.PublicURL + "/apps/bench/mcp"},
		{"caddy", fmt.Sprintf("http://127.0.0.1:%d/mcp", cport)},
	} {
		b.Run(target.name, func(b *testing.B) { benchToolCalls(b, target.url, 16) })
	}
}

// benchToolCalls runs b.N tools/call over `clients` concurrent sessions and
// reports calls/s and latency percentiles.
func benchToolCalls(b *testing.B, url string, clients int) {
	ctx := context.Background()
	sessions := make([]*mcp.ClientSession, clients)
	for i := range sessions {
		cs, err := mcp.NewClient(&mcp.Implementation{Name: "bench", Version: "1"}, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url}, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer cs.Close()
		sessions[i] = cs
	}
	lat := make([][]time.Duration, clients)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i, cs := range sessions {
		n := b.N / clients
		if i < b.N%clients {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < n; j++ {
				t0 := time.Now()
				if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "test_simple_text"}); err != nil {
					b.Error(err)
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	if len(all) == 0 {
		return
	}
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "calls/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkColdStart measures a request to an app at zero replicas: time to
// the first byte of the initialize response, minus the app's own start time
// (exec to accepting connections, measured on the host), gives the
// platform's part (sandbox, agent, probe, routing).
func BenchmarkColdStart(b *testing.B) {
	dir := everythingServer(b)
	// The app's own start time.
	var own []time.Duration
	for i := 0; i < 10; i++ {
		port := freePort(b)
		t0 := time.Now()
		p := exec.Command(filepath.Join(dir, "everything-server"), "-http", "127.0.0.1:"+strconv.Itoa(port), "-stateless=false")
		if err := p.Start(); err != nil {
			b.Fatal(err)
		}
		waitTCPQuick(b, port)
		own = append(own, time.Since(t0))
		_ = p.Process.Kill()
		_ = p.Wait()
	}
	srv := startBerth(b, "")
	srv.cli("app", "deploy", "cold", "--dir", dir, "--command", everythingCommand, "--min", "0", "--scale-down-after", "1s")
	url := srv.info.PublicURL + "/apps/cold/mcp"
	var ttfb []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		deadline := time.Now().Add(60 * time.Second)
		for len(srv.appShow("cold").Replicas) > 0 {
			if time.Now().After(deadline) {
				b.Fatal("did not scale to zero")
			}
			time.Sleep(100 * time.Millisecond)
		}
		b.StartTimer()
		t0 := time.Now()
		sid, _ := initialize(b, url)
		ttfb = append(ttfb, time.Since(t0))
		b.StopTimer()
		deleteSession(url, sid)
		b.StartTimer()
	}
	b.StopTimer()
	med := func(d []time.Duration) float64 {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return float64(d[len(d)/2].Microseconds()) / 1000
	}
	b.ReportMetric(med(ttfb), "ttfb-p50-ms")
	b.ReportMetric(med(own), "app-start-p50-ms")
	b.ReportMetric(med(ttfb)-med(own), "platform-ms")
}

func waitTCP(b testing.TB, port int) {
	for i := 0; i < 200; i++ {
		if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			c.Close()
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	b.Fatalf("nothing listens on %d", port)
}

func waitTCPQuick(b testing.TB, port int) {
	for i := 0; i < 20000; i++ {
		if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			c.Close()
			return
		}
		time.Sleep(200 * time.Microsecond)
	}
	b.Fatalf("nothing listens on %d", port)
}
