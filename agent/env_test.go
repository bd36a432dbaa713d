package agent

import (
	"slices"
	"testing"
)

func TestPassedEnv(t *testing.T) {
	got := passedEnv([]string{"PATH=/x", "HOME=/tmp", "HTTPS_PROXY=http://p:3128", "https_proxy=http://p:3128",
		"SSL_CERT_FILE=/.berth/egress-ca.pem", "SECRET=x", "GOMAXPROCS=1", "NO_PROXY=localhost"})
	want := []string{"HTTPS_PROXY=http://p:3128", "https_proxy=http://p:3128", "SSL_CERT_FILE=/.berth/egress-ca.pem", "NO_PROXY=localhost"}
	if !slices.Equal(got, want) {
		t.Fatalf("passedEnv = %q, want %q", got, want)
	}
}
