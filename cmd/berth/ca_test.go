package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/edge/certs"
)

// dataDirWithCA makes a data directory whose local CA exists, as berth up
// leaves it.
func dataDirWithCA(t *testing.T) (string, []byte) {
	t.Helper()
	dir := t.TempDir()
	m, err := certs.New(certs.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	return dir, m.RootPEM()
}

func TestCAExport(t *testing.T) {
	ctx := context.Background()
	dir, root := dataDirWithCA(t)
	var out bytes.Buffer
	if err := caCommand(ctx, []string{"export", "--data-dir", dir}, &out, "", nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), root) {
		t.Fatalf("export printed %q, want the manager's root", out.String())
	}
	block, _ := pem.Decode(out.Bytes())
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil || !cert.IsCA || !strings.Contains(cert.Subject.CommonName, "Berth") {
		t.Fatalf("exported %v (%v)", cert.Subject, err)
	}

	// BERTH_DATA_DIR is the default data directory.
	t.Setenv("BERTH_DATA_DIR", dir)
	out.Reset()
	if err := caCommand(ctx, []string{"export"}, &out, "", nil); err != nil || !bytes.Equal(out.Bytes(), root) {
		t.Fatalf("export with $BERTH_DATA_DIR: %v", err)
	}
}

func TestCAErrors(t *testing.T) {
	ctx := context.Background()
	empty := t.TempDir()
	var out bytes.Buffer
	err := caCommand(ctx, []string{"export", "--data-dir", empty}, &out, "", nil)
	if !errors.Is(err, certs.ErrNoCA) || !strings.Contains(err.Error(), empty) {
		t.Errorf("export without a CA: %v", err)
	}
	if _, err := os.Stat(filepath.Join(empty, "tls")); err == nil {
		t.Error("export created a CA")
	}
	for _, args := range [][]string{{"export", "extra"}, {"frobnicate"}, {"export", "--bogus"}} {
		var ue usageError
		if err := caCommand(ctx, args, &out, "", nil); !errors.As(err, &ue) {
			t.Errorf("%v: %v, want a usage error (exit 2)", args, err)
		}
	}
}

func TestCATrust(t *testing.T) {
	ctx := context.Background()
	dir, root := dataDirWithCA(t)
	store := t.TempDir()
	updated := 0
	var out bytes.Buffer
	err := caCommand(ctx, []string{"trust", "--data-dir", dir}, &out, store, func(context.Context) error { updated++; return nil })
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(store, "berth-root.crt"))
	if err != nil || !bytes.Equal(b, root) || updated != 1 {
		t.Fatalf("installed %q (%v), update ran %d times", b, err, updated)
	}
	for _, want := range []string{"NODE_EXTRA_CA_CERTS=", "SSL_CERT_FILE=", "REQUESTS_CA_BUNDLE=", "Go:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("trust output lacks %q:\n%s", want, out.String())
		}
	}
	if err := caCommand(ctx, []string{"trust", "--data-dir", dir}, &out, filepath.Join(store, "missing"), nil); err == nil || !strings.Contains(err.Error(), "by hand") {
		t.Errorf("trust without the store directory: %v", err)
	}
}
