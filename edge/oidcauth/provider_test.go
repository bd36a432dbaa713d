package oidcauth

import (
	"encoding/json"
	"net"
	"testing"

	"github.com/berth-dev/berth/internal/oidctest"
)

// The provider these tests verify tokens of: internal/oidctest's, with
// this audience.
const testAudience = "https://tasks.apps.example.test/mcp"

// startProvider serves the provider on ln (a free loopback port when nil).
func startProvider(t testing.TB, ln net.Listener) *oidctest.Provider {
	return oidctest.Start(t, ln, testAudience)
}

func jsonMarshal(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
