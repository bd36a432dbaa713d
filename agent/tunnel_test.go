package agent

import "testing"

func TestAppHost(t *testing.T) {
	for _, c := range []struct {
		host string
		want bool
	}{
		{"tasks", true},
		{"tasks:80", true},
		{"Tasks.internal", true},
		{"tasks.internal.", true},
		{"tasks.internal:80", true},
		{"tasks:8080", false}, // another port: not the app's front door
		{"localhost", false},
		{"example.com", false},
		{"a.b.internal", false},
		{"127.0.0.1", false},
		{"[::1]:80", false},
		{"", false},
	} {
		if got := appHost(c.host); got != c.want {
			t.Errorf("appHost(%q) = %v, want %v", c.host, got, c.want)
		}
	}
}
