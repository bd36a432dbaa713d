package server

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/egress"
)

// EgressOptions configure the egress proxy of pools and apps with egress
// rules.
type EgressOptions struct {
	// DNS, if set (host:port), is the resolver the proxy asks for the names
	// sandboxes connect to, instead of the host's.
	DNS string
	// UpstreamCAs are PEM files of extra roots the proxy trusts when it
	// re-encrypts intercepted requests (besides the system's).
	UpstreamCAs []string
	// Secrets resolves inject rules' secrets; default: files
	// DATA_DIR/egress/secrets/SCOPE/NAME (SCOPE: pool_NAME or app_NAME).
	Secrets egress.Secrets
}

// newEgress makes the egress proxy service: CAs under DATA_DIR/egress.
func newEgress(o EgressOptions, dataDir string, log *slog.Logger) (*egress.Service, error) {
	dir := filepath.Join(dataDir, "egress")
	eo := egress.Options{Dir: dir, Secrets: o.Secrets, Logger: log}
	if eo.Secrets == nil {
		eo.Secrets = fileSecrets(filepath.Join(dir, "secrets"))
	}
	if o.DNS != "" {
		addr := o.DNS
		eo.Resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
	}
	if len(o.UpstreamCAs) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		for _, f := range o.UpstreamCAs {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("egress upstream CA: %w", err)
			}
			if !pool.AppendCertsFromPEM(b) {
				return nil, fmt.Errorf("egress upstream CA %s: no PEM certificate", f)
			}
		}
		eo.UpstreamRoots = pool
	}
	return egress.New(eo), nil
}

// fileSecrets reads secrets from DIR/SCOPE/NAME: a stand-in until secrets
// have a store of their own (berth secret set).
type fileSecrets string

func (d fileSecrets) Secret(_ context.Context, scope, name string) ([]byte, error) {
	if strings.ContainsAny(name, "/\\") || name == "." || name == ".." {
		return nil, fmt.Errorf("bad secret name %q", name)
	}
	b, err := os.ReadFile(filepath.Join(string(d), strings.ReplaceAll(scope, "/", "_"), name))
	if err != nil {
		return nil, fmt.Errorf("secret %s of %s: %w", name, scope, err)
	}
	return []byte(strings.TrimRight(string(b), "\r\n")), nil
}
