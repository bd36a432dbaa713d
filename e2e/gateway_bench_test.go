package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/imagetest"
	"github.com/berth-dev/berth/internal/oidctest"
	"github.com/berth-dev/berth/internal/registrytest"
	"github.com/berth-dev/berth/internal/testutil"
)

// BenchmarkGateway measures MCP tools/call throughput and latency with 16
// concurrent go-sdk clients (each with its own keep-alive connections, as
// separate client processes would have), side by side in one run and on
// one upstream: a replica of the go-sdk conformance server that Berth runs
// in its sandbox. "direct" dials the replica's port inside the sandbox's
// network namespace; "caddy" goes through Caddy's reverse_proxy, run in that
// namespace next to the app; "berth" goes through Berth's public listener
// and gateway; "berth-https" goes through a second Berth (its own
// replica of the app) serving the front door over HTTPS (local CA,
// HTTP/1.1 keep-alive, as Node's fetch does), whose proxy CPU per call is
// compared with the plain one's (berth-https/berth-cpu); "berth-oidc" goes
// through the plain Berth to a second app with --auth oidc (its own
// replica), every call carrying a real provider's JWT access token
// (berth-oidc/berth-cpu).
//
// It runs twice. "shared": every process on every core, so on a small
// machine the proxy's CPU time comes straight out of the clients' and the
// app's. "isolated": the clients and the app on CPU 0, the proxy on the
// last CPU, as when a proxy is measured on a machine of its own: what is
// left is the latency the proxy adds. Run it with `make bench`, which
// installs Caddy in .bin:
//
//	go test ./e2e -run '^$' -bench Gateway -benchtime 16000x
func BenchmarkGateway(b *testing.B) {
	caddy := filepath.Join(testutil.ModuleRoot(), ".bin", "caddy")
	if _, err := os.Stat(caddy); err != nil {
		b.Skip("Caddy is not in .bin (make bench installs it)")
	}
	dir := everythingServer(b)
	srv := startBerth(b, "", "--log-level", "info")
	srv.cli("app", "deploy", "bench", "--dir", dir, "--command", everythingCommand, "--port", "8080",
		"--min", "1", "--max", "1", "--concurrency", "1000", "--cpu", "2", "--memory", "1Gi")
	srv.waitReplicas("bench", 1)
	app := appProcess(b, "everything-server")
	netns := fmt.Sprintf("/proc/%d/ns/net", app)
	// The same app with OIDC on, behind the same server, with a real
	// provider's token (its keys cached after the first call).
	oidcURL := srv.info.PublicURL + "/apps/benchoidc/mcp"
	op := oidctest.Start(b, nil, oidcURL)
	srv.cli("app", "deploy", "benchoidc", "--dir", dir, "--command", everythingCommand, "--port", "8080",
		"--min", "1", "--max", "1", "--concurrency", "1000", "--cpu", "2", "--memory", "1Gi",
		"--auth", "oidc", "--oidc-issuer", op.Issuer, "--oidc-audience", oidcURL)
	srv.waitReplicas("benchoidc", 1)
	appOIDC := appProcess(b, "everything-server", app)
	// The same over HTTPS, on a server of its own: a plain listener
	// redirects app traffic once HTTPS is on.
	srvTLS := startBerth(b, "", "--log-level", "info", "--https-listen", "127.0.0.1:0")
	srvTLS.cli("app", "deploy", "bench", "--dir", dir, "--command", everythingCommand, "--port", "8080",
		"--min", "1", "--max", "1", "--concurrency", "1000", "--cpu", "2", "--memory", "1Gi")
	srvTLS.waitReplicas("bench", 1)
	appTLS := appProcess(b, "everything-server", app, appOIDC)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(srvTLS.cli("ca", "export", "--data-dir", srvTLS.dataDir)))

	// Caddy shares the replica's network namespace, as a sidecar would.
	cfg := `{"admin":{"disabled":true},"logging":{"logs":{"default":{"level":"ERROR"}}},"apps":{"http":{"servers":{"b":{"listen":["127.0.0.1:8081"],"routes":[{"handle":[{"handler":"reverse_proxy","flush_interval":-1,"upstreams":[{"dial":"127.0.0.1:8080"}]}]}]}}}}}`
	cfgFile := filepath.Join(b.TempDir(), "caddy.json")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	cad := exec.Command("nsenter", "--net="+netns, caddy, "run", "--config", cfgFile)
	if err := cad.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cad.Process.Kill(); _ = cad.Wait() }()
	inNetns := netnsDialer(netns)
	for i := 0; ; i++ {
		c, err := inNetns(context.Background(), "tcp", "127.0.0.1:8081")
		if err == nil {
			c.Close()
			break
		}
		if i == 200 {
			b.Fatalf("caddy did not start: %v", err)
		}
		time.Sleep(25 * time.Millisecond)
	}

	targets := []*benchTarget{
		{name: "direct", url: "http://127.0.0.1:8080/mcp", dial: inNetns},
		{name: "berth", url: srv.info.PublicURL + "/apps/bench/mcp", proxy: srv.cmd.Process.Pid},
		{name: "caddy", url: "http://127.0.0.1:8081/mcp", dial: inNetns, proxy: cad.Process.Pid},
		{name: "berth-https", url: srvTLS.info.PublicURL + "/apps/bench/mcp", proxy: srvTLS.cmd.Process.Pid, tls: &tls.Config{RootCAs: roots}},
		{name: "berth-oidc", url: oidcURL, proxy: srv.cmd.Process.Pid, token: op.Token(b)},
	}
	for _, t := range targets {
		t.connect(b, 16)
	}
	b.Run("shared", func(b *testing.B) { benchTurns(b, targets) })
	b.Run("isolated", func(b *testing.B) {
		last := runtime.NumCPU() - 1
		if last < 1 {
			b.Skip("one CPU: nothing to isolate the proxy on")
		}
		all := make([]int, runtime.NumCPU())
		for i := range all {
			all[i] = i
		}
		for _, p := range []struct{ pid, cpu int }{{os.Getpid(), 0}, {app, 0}, {appTLS, 0}, {appOIDC, 0}, {srv.cmd.Process.Pid, last}, {cad.Process.Pid, last}, {srvTLS.cmd.Process.Pid, last}} {
			pinProcess(b, p.pid, p.cpu)
			defer pinProcess(b, p.pid, all...)
		}
		benchTurns(b, targets)
	})
}

// benchTurns makes b.N calls to each target. The targets take turns, a
// slice of the calls each, so that whatever else the machine does weighs on
// all three alike.
func benchTurns(b *testing.B, targets []*benchTarget) {
	const rounds = 8
	for _, t := range targets {
		t.reset()
	}
	b.ResetTimer()
	for r := 0; r < rounds; r++ {
		n := b.N / rounds
		if r < b.N%rounds {
			n++
		}
		for _, t := range targets {
			t.run(b, n)
		}
	}
	b.StopTimer()
	for _, t := range targets {
		t.report(b)
	}
	if d, bt, c := targets[0].rate(), targets[1].rate(), targets[2].rate(); d > 0 && c > 0 {
		b.ReportMetric(bt/d, "berth/direct")
		b.ReportMetric(bt/c, "berth/caddy")
	}
	if p, h, o := targets[1].cpuPerCall(), targets[3].cpuPerCall(), targets[4].cpuPerCall(); p > 0 {
		b.ReportMetric(h/p, "berth-https/berth-cpu")
		b.ReportMetric(o/p, "berth-oidc/berth-cpu")
	}
}

// pinProcess sets the CPU affinity of every thread of a process (threads
// it starts later inherit it).
func pinProcess(b testing.TB, pid int, cpus ...int) {
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	// Twice, for a thread started while the first pass ran.
	for pass := 0; pass < 2; pass++ {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			b.Fatal(err)
		}
		for _, t := range tasks {
			tid, _ := strconv.Atoi(t.Name())
			if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
				b.Fatalf("pin %d/%d: %v", pid, tid, err)
			}
		}
	}
}

// benchTarget is one way to reach the benchmark's app, with its clients and
// what they measured.
type benchTarget struct {
	name     string
	url      string
	dial     func(ctx context.Context, network, addr string) (net.Conn, error) // nil: the host's network
	proxy    int                                                               // the proxy's pid, 0 for none
	tls      *tls.Config                                                       // set for an https URL
	token    string                                                            // a bearer token to send, if set
	sessions []*mcp.ClientSession

	lat     []time.Duration
	elapsed time.Duration
	cpu     time.Duration // the proxy's CPU time
}

// connect opens the target's client sessions, each with its own
// keep-alive connections, as separate client processes would have.
func (t *benchTarget) connect(b *testing.B, clients int) {
	for i := 0; i < clients; i++ {
		var rt http.RoundTripper = &http.Transport{DialContext: t.dial, TLSClientConfig: t.tls, MaxIdleConnsPerHost: 4, DisableCompression: true}
		if t.token != "" {
			rt = bearer{token: t.token, next: rt}
		}
		hc := &http.Client{Transport: rt}
		cs, err := mcp.NewClient(&mcp.Implementation{Name: "bench", Version: "1"}, nil).Connect(context.Background(),
			&mcp.StreamableClientTransport{Endpoint: t.url, HTTPClient: hc}, nil)
		if err != nil {
			b.Fatalf("%s: %v", t.name, err)
		}
		b.Cleanup(func() { _ = cs.Close() })
		t.sessions = append(t.sessions, cs)
	}
}

// bearer sends a bearer token with every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (a bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+a.token)
	return a.next.RoundTrip(r)
}

func (t *benchTarget) reset() { t.lat, t.elapsed, t.cpu = nil, 0, 0 }

// run makes n tools/call, spread over the target's sessions, all at once.
func (t *benchTarget) run(b *testing.B, n int) {
	ctx := context.Background()
	lat := make([][]time.Duration, len(t.sessions))
	cpu0 := processCPU(b, t.proxy)
	start := time.Now()
	var wg sync.WaitGroup
	for i, cs := range t.sessions {
		k := n / len(t.sessions)
		if i < n%len(t.sessions) {
			k++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < k; j++ {
				t0 := time.Now()
				if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "test_simple_text"}); err != nil {
					b.Errorf("%s: %v", t.name, err)
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	t.elapsed += time.Since(start)
	t.cpu += processCPU(b, t.proxy) - cpu0
	for _, l := range lat {
		t.lat = append(t.lat, l...)
	}
}

func (t *benchTarget) cpuPerCall() float64 {
	if len(t.lat) == 0 {
		return 0
	}
	return float64(t.cpu.Microseconds()) / float64(len(t.lat))
}

func (t *benchTarget) rate() float64 {
	if t.elapsed == 0 {
		return 0
	}
	return float64(len(t.lat)) / t.elapsed.Seconds()
}

// report gives calls/s, latency percentiles and, for a proxy, the CPU time
// it spent per call: on a saturated 2-core machine, that is what the proxy
// takes from the clients and the app.
func (t *benchTarget) report(b *testing.B) {
	if len(t.lat) == 0 {
		return
	}
	sort.Slice(t.lat, func(i, j int) bool { return t.lat[i] < t.lat[j] })
	b.ReportMetric(t.rate(), t.name+"-calls/s")
	b.ReportMetric(float64(t.lat[len(t.lat)/2].Microseconds())/1000, t.name+"-p50-ms")
	b.ReportMetric(float64(t.lat[len(t.lat)*99/100].Microseconds())/1000, t.name+"-p99-ms")
	if t.proxy != 0 {
		b.ReportMetric(t.cpuPerCall(), t.name+"-cpu-µs/call")
	}
}

// appProcess finds the one process running the named binary in a network
// namespace other than ours (an app's replica), other than those of not.
func appProcess(b testing.TB, binary string, not ...int) int {
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		b.Fatal(err)
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || slices.Contains(not, pid) {
			continue
		}
		exe, err := os.Readlink("/proc/" + e.Name() + "/exe")
		if err != nil || filepath.Base(exe) != binary {
			continue
		}
		if id, err := os.Readlink("/proc/" + e.Name() + "/ns/net"); err == nil && id != self {
			return pid
		}
	}
	b.Fatalf("no %s in a sandbox", binary)
	return 0
}

// netnsDialer dials TCP from inside a network namespace: the socket is made
// on a thread that joined the namespace, and stays there once connected.
func netnsDialer(netns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			// The thread is left locked: it dies with the goroutine
			// rather than go back to the host's namespace.
			runtime.LockOSThread()
			f, err := os.Open(netns)
			if err != nil {
				ch <- result{err: err}
				return
			}
			defer f.Close()
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				ch <- result{err: fmt.Errorf("setns: %w", err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// processCPU is the user and system CPU time a process (and its threads)
// has used so far; 0 for pid 0.
func processCPU(b testing.TB, pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name, which is in parentheses: utime and
	// stime are the 12th and 13th of them, in clock ticks (100 Hz).
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// BenchmarkColdStart measures a request to an app at zero replicas: time to
// the first byte of the initialize response, minus the app's own start time
// (exec to accepting connections, measured on the host), gives the
// platform's part (sandbox, agent, probe, routing). The same server runs
// from a directory (dir) and from an image held by the image store
// (image), side by side in one run.
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
	reg := registrytest.Start(b, registrytest.Options{})
	imagetest.Push(b, reg.Ref("bench/everything:1"), everythingImage(b))
	srv := startBerth(b, "", "--insecure-registry", reg.Host)
	srv.cli("app", "deploy", "cold", "--dir", dir, "--command", everythingCommand, "--min", "0", "--scale-down-after", "1s")
	srv.cli("app", "deploy", "cold-image", "--image", reg.Ref("bench/everything:1"), "--min", "0", "--scale-down-after", "1s")
	b.Run("dir", func(b *testing.B) { coldStarts(b, srv, "cold", own) })
	b.Run("image", func(b *testing.B) { coldStarts(b, srv, "cold-image", own) })
}

func coldStarts(b *testing.B, srv *berth, name string, own []time.Duration) {
	url := srv.info.PublicURL + "/apps/" + name + "/mcp"
	var ttfb []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		deadline := time.Now().Add(60 * time.Second)
		for len(srv.appShow(name).Replicas) > 0 {
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
		d = slices.Clone(d)
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return float64(d[len(d)/2].Microseconds()) / 1000
	}
	b.ReportMetric(med(ttfb), "ttfb-p50-ms")
	b.ReportMetric(med(own), "app-start-p50-ms")
	b.ReportMetric(med(ttfb)-med(own), "platform-ms")
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
