package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/berth-dev/berth/edge/certs"
	"github.com/berth-dev/berth/identity"
)

// newIssuer is Berth's workload identity issuer: its keys in DATA_DIR/identity,
// its iss the public URL.
func newIssuer(dir, publicURL string) (*identity.Issuer, error) {
	return identity.New(identity.Options{Dir: filepath.Join(dir, "identity"), Issuer: strings.TrimSuffix(publicURL, "/")})
}

// oidcClient fetches OIDC issuers' documents and keys, trusting the
// system's roots and, when there is one, Berth's own CA's: an app with
// --auth oidc on Berth's own issuer (https://…, a local-CA certificate)
// then verifies tokens without the root being installed system-wide.
func oidcClient(dataDir string) *http.Client {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if pem, err := certs.ReadRootPEM(dataDir); err == nil {
		pool.AppendCertsFromPEM(pem)
	} else if !errors.Is(err, certs.ErrNoCA) {
		return nil
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}
