package egress_test

import (
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-dev/berth/egress"
)

// BenchmarkEgressLatency measures, inside real sandboxes, the time of an
// HTTPS request (new connection, TLS handshake, GET) to the fake internet:
// direct (egress enabled, NAT), through the proxy (CONNECT tunnel), and
// through the proxy with a header injected (TLS terminated and
// re-encrypted). It reports the medians of 40 requests.
func BenchmarkEgressLatency(b *testing.B) {
	rts := runtimes(b)
	u := startUpstream(b)
	svc, dir := newService(b, u, testDNS(b), mapSecrets{"pool/bench/GH": "Bearer x"})
	px, err := svc.Proxy("pool/bench", egress.Policy{Allow: []string{"up.test", "inject.test"},
		Inject: []egress.Inject{{Host: "inject.test", Header: "Authorization", Secret: "GH"}}})
	if err != nil {
		b.Fatal(err)
	}
	loop := func(curl, host string) string {
		return "for i in $(seq 40); do " + curl + " -o /dev/null -sS -w '%{time_total}\\n' --max-time 20 --cacert /tmp/up-ca.pem https://" + host + "/; done"
	}
	for name, rt := range rts {
		b.Run(name, func(b *testing.B) {
			direct := startBox(b, rt, "bench-direct-"+name, nil)
			proxied := startBox(b, rt, "bench-proxy-"+name, px)
			run(b, direct, "cat > /tmp/up-ca.pem <<'EOF'\n"+string(u.caPEM)+"EOF")
			// The same small bundle on both sides (the upstream's CA, and the
			// pool's for intercepted hosts): loading the system's bundle
			// costs curl more than the network does.
			berthCA, err := os.ReadFile(filepath.Join(dir, "pool_bench", "ca.crt"))
			if err != nil {
				b.Fatal(err)
			}
			run(b, proxied, "cat > /tmp/up-ca.pem <<'EOF'\n"+string(u.caPEM)+string(berthCA)+"EOF")
			for i := 0; i < b.N; i++ {
				for _, c := range []struct{ label, code string }{
					{"direct-ms", loop("curl --resolve up.test:443:"+upstreamIP, "up.test")},
					{"proxy-ms", loop("curl", "up.test")},
					{"proxy-inject-ms", loop("curl", "inject.test")},
				} {
					sb := proxied
					if c.label == "direct-ms" {
						sb = direct
					}
					out := run(b, sb, c.code)
					b.ReportMetric(median(b, out.Stdout+out.Stderr)*1000, c.label)
				}
			}
		})
	}
}

func median(tb testing.TB, out string) float64 {
	var v []float64
	for _, f := range strings.Fields(out) {
		x, err := strconv.ParseFloat(f, 64)
		if err != nil {
			tb.Fatalf("curl: %s", out)
		}
		v = append(v, x)
	}
	if len(v) == 0 {
		tb.Fatalf("no timings: %s", out)
	}
	sort.Float64s(v)
	return v[len(v)/2]
}
