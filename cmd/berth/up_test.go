package main

import (
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/berth-dev/berth/edge/certs"
)

// TestTLSFlags: the HTTPS flags parse into a mode, and every combination
// that would be silently ignored is refused.
func TestTLSFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		mode certs.Mode
		err  string
	}{
		{nil, "", ""},
		{[]string{"--https-listen", ":8443"}, certs.ModeInternal, ""},
		{[]string{"--https-listen", ":8443", "--tls", "acme", "--acme-email", "a@b.test"}, certs.ModeACME, ""},
		{[]string{"--https-listen", ":8443", "--tls-cert", "c", "--tls-key", "k"}, certs.ModeFiles, ""},
		{[]string{"--https-listen", ":8443", "--tls", "internal", "--tls-cert", "c", "--tls-key", "k"}, certs.ModeInternal, ""},
		{[]string{"--tls", "acme"}, "", "needs --https-listen"},
		{[]string{"--tls-cert", "c", "--tls-key", "k"}, "", "needs --https-listen"},
		{[]string{"--https-listen", ":8443", "--tls", "acme"}, "", "--acme-email"},
		{[]string{"--https-listen", ":8443", "--acme-email", "a@b.test"}, "", "need --tls acme"},
		{[]string{"--https-listen", ":8443", "--tls-cert", "c"}, "", "go together"},
		{[]string{"--https-listen", ":8443", "--tls", "self"}, "", "--tls: internal or acme"},
	} {
		fs := flag.NewFlagSet("up", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		https, mode, o := registerTLSFlags(fs)
		if err := fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		err := tlsFlags(fs, *https, *mode, o)
		if c.err == "" && (err != nil || o.Mode != c.mode) || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%v: mode %q, err %v; want mode %q, error %q", c.args, o.Mode, err, c.mode, c.err)
		}
	}
}
