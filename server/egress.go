package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/egress"
	"github.com/berth-dev/berth/store"
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
	// Secrets resolves inject rules' secrets; default: the store's (pool
	// and app secrets).
	Secrets egress.Secrets
}

// newEgress makes the egress proxy service: CAs under DATA_DIR/egress.
func newEgress(o EgressOptions, dataDir string, st state, log *slog.Logger) (*egress.Service, error) {
	dir := filepath.Join(dataDir, "egress")
	eo := egress.Options{Dir: dir, Secrets: o.Secrets, Logger: log}
	if eo.Secrets == nil {
		eo.Secrets = storeSecrets{st}
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

// storeSecrets reads inject rules' secrets from the store: an app's
// (berth secret set APP NAME) for scope app/NAME, a pool's (berth secret
// set --pool POOL NAME) for pool/NAME.
type storeSecrets struct{ st state }

func (s storeSecrets) Secret(ctx context.Context, scope, name string) ([]byte, error) {
	var v []byte
	var err error
	if p, ok := strings.CutPrefix(scope, "pool/"); ok {
		v, err = s.st.PoolSecret(ctx, p, name)
	} else if a, ok := strings.CutPrefix(scope, "app/"); ok {
		v, err = s.st.Secret(ctx, a, name)
	} else {
		return nil, fmt.Errorf("no secrets for scope %q", scope)
	}
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("secret %s of %s: %w", name, scope, egress.ErrNoSecret)
	}
	return v, err
}
