package agent

import (
	"slices"
	"strings"
	"testing"
)

func TestPassedEnv(t *testing.T) {
	got := passedEnv([]string{"PATH=/x", "HOME=/tmp", "HTTPS_PROXY=http://p:3128", "https_proxy=http://p:3128",
		"SSL_CERT_FILE=/.berth/egress-ca.pem", "SECRET=x", "GOMAXPROCS=1", "NO_PROXY=localhost"})
	want := []string{"SSL_CERT_FILE=/.berth/egress-ca.pem"}
	if !slices.Equal(got, want) {
		t.Fatalf("passedEnv = %q, want %q", got, want)
	}
}

// TestProxyEnv: the tunnel and the egress proxy together give each proxy
// variable once, with one value: plain HTTP to the tunnel, HTTPS to the
// egress proxy.
func TestProxyEnv(t *testing.T) {
	tun := "http://" + TunnelAddr
	egr := []string{"HTTP_PROXY=http://10.0.0.1:3128", "HTTPS_PROXY=http://10.0.0.1:3128", "http_proxy=http://10.0.0.1:3128",
		"https_proxy=http://10.0.0.1:3128", "NO_PROXY=localhost,127.0.0.1,::1,corp.test", "no_proxy=localhost,127.0.0.1,::1,corp.test"}
	for _, c := range []struct {
		name   string
		driver []string
		want   map[string]string
		egress string
	}{
		{"no egress proxy", []string{"PATH=/bin"}, map[string]string{
			"http_proxy": tun, "HTTP_PROXY": tun, "no_proxy": "localhost,127.0.0.1,::1", "NO_PROXY": "localhost,127.0.0.1,::1",
			"NODE_USE_ENV_PROXY": "1"}, ""},
		{"egress proxy", egr, map[string]string{
			"http_proxy": tun, "HTTP_PROXY": tun, "https_proxy": "http://10.0.0.1:3128", "HTTPS_PROXY": "http://10.0.0.1:3128",
			"no_proxy": "localhost,127.0.0.1,::1,corp.test", "NO_PROXY": "localhost,127.0.0.1,::1,corp.test", "NODE_USE_ENV_PROXY": "1"},
			"http://10.0.0.1:3128"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// What the executor gives: the driver's passed variables, then these.
			env := append(passedEnv(c.driver), proxyEnv(c.driver)...)
			got := map[string]string{}
			for _, kv := range env {
				k, v, _ := strings.Cut(kv, "=")
				if old, dup := got[k]; dup {
					t.Errorf("%s twice: %q and %q", k, old, v)
				}
				got[k] = v
			}
			for k, v := range c.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
			if len(got) != len(c.want) {
				t.Errorf("env = %q", env)
			}
			u := egressProxy(c.driver)
			if (u == nil && c.egress != "") || (u != nil && u.String() != c.egress) {
				t.Errorf("egressProxy = %v, want %q", u, c.egress)
			}
		})
	}
}
