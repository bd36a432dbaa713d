package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestUIFlags: the dashboard's OIDC flags parse into options, and OIDC
// without an allow-list (anyone at the provider would be admin) is refused.
func TestUIFlags(t *testing.T) {
	dir := t.TempDir()
	secret, empty := filepath.Join(dir, "secret"), filepath.Join(dir, "empty")
	if err := os.WriteFile(secret, []byte(" s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"--ui-oidc-issuer", "https://idp.example", "--ui-oidc-client-id", "berth"}
	for _, c := range []struct {
		args []string
		err  string
	}{
		{nil, ""},
		{append(base, "--ui-oidc-allowed-emails", "a@b.test,c@d.test", "--ui-oidc-client-secret-file", secret), ""},
		{append(base, "--ui-oidc-required-claim", "groups=admins", "--ui-public"), ""},
		{base, "allow-list"},
		{append(base, "--ui-oidc-required-claim", "groups"), "NAME=VALUE"},
		{append(base[:2:2], "--ui-oidc-allowed-subjects", "x"), "client ID"},
		{[]string{"--ui-oidc-issuer", "http://idp.example", "--ui-oidc-client-id", "b", "--ui-oidc-allowed-subjects", "x"}, "https"},
		{append(base, "--ui-oidc-allowed-subjects", "x", "--ui-oidc-client-secret-file", empty), "is empty"},
		{append(base, "--ui-oidc-allowed-subjects", "x", "--ui-oidc-client-secret-file", filepath.Join(dir, "none")), "no such file"},
		{[]string{"--ui-public"}, "need --ui-oidc-issuer"},
		{[]string{"--ui-oidc-allowed-emails", "a@b.test"}, "need --ui-oidc-issuer"},
	} {
		fs := flag.NewFlagSet("up", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		f := registerUIFlags(fs)
		if err := fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		o, err := f.options()
		if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%v: %v, want error %q", c.args, err, c.err)
			continue
		}
		if c.err == "" && slices.Contains(c.args, "--ui-oidc-client-secret-file") && (o.OIDC.ClientSecret != "s3cret" || len(o.OIDC.AllowedEmails) != 2) {
			t.Errorf("%v: %+v", c.args, o.OIDC)
		}
	}
}
