package egress

import (
	"net/netip"
	"strings"
	"testing"
)

func TestSetting(t *testing.T) {
	for _, c := range []struct {
		egress string
		inject []string
		want   string // canonical egress, or the error's text
		policy bool
	}{
		{"", nil, "disabled", false},
		{"enabled", nil, "enabled", false},
		{"allow=API.github.com, *.pypi.org", nil, "allow=api.github.com,*.pypi.org", true},
		{"allow=api.github.com", []string{"api.github.com:authorization=secretref:GH"}, "allow=api.github.com", true},
		{"enabled", []string{"a.b:X=secretref:S"}, "need an allow-list", false},
		{"allow=", nil, "allow-list is empty", false},
		{"allow=a.b/c", nil, "not a host name", false},
		{"allow=*", nil, "not a host name", false},
		{"allow=a.*.b", nil, "not a host name", false},
		{"allow=a.b:99999", nil, "bad port", false},
		{"allow=a.b", []string{"c.d:X=secretref:S"}, "not in the allow-list", false},
		{"allow=a.b", []string{"a.b:X=literal"}, "secretref:NAME", false},
		{"allow=a.b", []string{"a.b:X Y=secretref:S"}, "bad header name", false},
		{"sometimes", nil, "must be disabled, enabled or allow=", false},
	} {
		got, _, p, err := Setting(c.egress, c.inject)
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, c.want) || (p != nil) != c.policy {
			t.Errorf("Setting(%q, %q) = %q, %v; want %q", c.egress, c.inject, got, p, c.want)
		}
	}
}

func TestAllows(t *testing.T) {
	p := Policy{Allow: []string{"api.github.com", "*.pypi.org", "internal.example:8443", "10.1.0.0/16", "192.168.1.5"}}
	for _, c := range []struct {
		host string
		port int
		want bool
	}{
		{"api.github.com", 443, true},
		{"API.GitHub.com.", 80, true},
		{"api.github.com", 22, false},
		{"github.com", 443, false},
		{"evil-api.github.com", 443, false},
		{"files.pypi.org", 443, true},
		{"a.b.pypi.org", 443, true},
		{"pypi.org", 443, false},
		{"evilpypi.org", 443, false},
		{"internal.example", 8443, true},
		{"internal.example", 443, false},
	} {
		if got := p.allowsName(c.host, c.port); got != c.want {
			t.Errorf("allowsName(%s, %d) = %v", c.host, c.port, got)
		}
	}
	own := func(a netip.Addr) bool { return a == netip.MustParseAddr("203.0.113.7") }
	for addr, want := range map[string]string{
		"198.18.0.2":       "",
		"127.0.0.1":        "loopback",
		"::ffff:127.0.0.1": "loopback",
		"169.254.169.254":  "metadata",
		"169.254.1.1":      "link-local",
		"10.0.0.1":         "private",
		"10.1.2.3":         "", // named by a rule
		"192.168.1.5":      "",
		"192.168.1.6":      "private",
		"100.64.0.1":       "private",
		"203.0.113.7":      "the Berth host",
		"fd00::1":          "private",
		"::1":              "loopback",
	} {
		if got := p.why(netip.MustParseAddr(addr), own); want == "" && got != "" || want != "" && !strings.Contains(got, want) {
			t.Errorf("why(%s) = %q, want %q", addr, got, want)
		}
	}
}
