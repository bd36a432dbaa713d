package app

import (
	"testing"
)

func TestValidHostname(t *testing.T) {
	for _, c := range []struct {
		host string
		ok   bool
	}{
		{"mcp.example.com", true},
		{"a-b.c1.example", true},
		{"xn--bcher-kva.example", true},
		{"", false},
		{"example", false},
		{"Mcp.example.com", false},
		{"mcp.example.com:443", false},
		{"10.0.0.1", false},
		{"[::1]", false},
		{"::1", false},
		{"a..example.com", false},
		{"-a.example.com", false},
		{"a-.example.com", false},
		{"a_b.example.com", false},
		{"*.example.com", false},
		{"tasks.apps.test", false}, // under the app domain
		{"apps.test", false},
		{"xapps.test", true},
	} {
		err := ValidHostname(c.host, "apps.test")
		if (err == nil) != c.ok {
			t.Errorf("%q: %v, want ok=%v", c.host, err, c.ok)
		}
	}
}

func TestHostIndex(t *testing.T) {
	var x hostIndex
	if _, ok := x.reserve("a", "h.example", ""); !ok {
		t.Fatal("reserve a free host")
	}
	if owner, ok := x.reserve("b", "h.example", ""); ok || owner != "a" {
		t.Fatalf("reserve a's host for b: %q %v", owner, ok)
	}
	if _, ok := x.reserve("a", "h.example", "blue"); !ok {
		t.Fatal("an app re-reserving its host")
	}
	x.remove("b", "h.example") // not b's: stays
	if t2, ok := x.m["h.example"]; !ok || t2 != (hostTarget{"a", "blue"}) {
		t.Fatalf("after b's remove: %+v %v", t2, ok)
	}
	x.remove("a", "h.example")
	if _, ok := x.m["h.example"]; ok {
		t.Fatal("removed host still indexed")
	}
}
