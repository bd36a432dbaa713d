package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/berth-dev/berth/controlplane"
)

// httpsFront is what a test needs to reach a berth's HTTPS listener: the
// exported root, and a client that trusts only it and dials the listener
// whatever the URL's host (Go does not resolve *.localhost, nor the test's
// custom domains).
type httpsFront struct {
	b        *berth
	rootFile string
	roots    *x509.CertPool
	addr     string // the HTTPS listener, host:port
	port     string
}

func newHTTPSFront(t *testing.T, b *berth) *httpsFront {
	t.Helper()
	if !strings.HasPrefix(b.info.PublicURL, "https://") || b.info.PlainURL == "" {
		t.Fatalf("server.json with HTTPS on: publicURL %q, plainURL %q", b.info.PublicURL, b.info.PlainURL)
	}
	pem := b.cli("ca", "export", "--data-dir", b.dataDir)
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(pem)) {
		t.Fatalf("berth ca export printed no certificate:\n%s", pem)
	}
	rootFile := filepath.Join(t.TempDir(), "berth-root.pem")
	if err := os.WriteFile(rootFile, []byte(pem), 0o644); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(b.info.PublicURL)
	return &httpsFront{b: b, rootFile: rootFile, roots: roots, addr: u.Host, port: u.Port()}
}

// client trusts only the root and dials the HTTPS listener for any host;
// header is added to every request (a pool key, say).
func (f *httpsFront) client(header http.Header) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: f.roots},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, f.addr)
		},
	}
	return &http.Client{Transport: headerRT{tr, header}, Timeout: 2 * time.Minute}
}

type headerRT struct {
	rt http.RoundTripper
	h  http.Header
}

func (h headerRT) RoundTrip(r *http.Request) (*http.Response, error) {
	if len(h.h) > 0 {
		r = r.Clone(r.Context())
		for k, v := range h.h {
			r.Header[k] = v
		}
	}
	return h.rt.RoundTrip(r)
}

// hostURL is https://HOST:PORT/PATH on the HTTPS listener.
func (f *httpsFront) hostURL(host, path string) string {
	return "https://" + net.JoinHostPort(host, f.port) + path
}

// handshake dials the HTTPS listener with SNI name and returns the leaf
// the server sent, verified against the root.
func (f *httpsFront) handshake(name string) (*x509.Certificate, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", f.addr, &tls.Config{ServerName: name, RootCAs: f.roots})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

// callTool connects the go-sdk client to url, calls tool and returns its
// text and the session (closed by the caller).
func callTool(t *testing.T, hc *http.Client, url, tool string) (string, *mcp.ClientSession) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "berth-e2e-https", Version: "1"}, nil).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: url, HTTPClient: hc, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	r, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{}})
	if err != nil || r.IsError {
		t.Fatalf("%s at %s: %v %+v", tool, url, err, r)
	}
	return mcpText(r), cs
}

// noRedirect is a plain HTTP client that shows redirects instead of
// following them.
var noRedirect = &http.Client{
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func plainRequest(t *testing.T, method, url, host string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(`{}`))
	if host != "" {
		req.Host = host
	}
	res, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

// TestHTTPS serves the front door over HTTPS with Berth's local CA: the
// go-sdk client (trusting only the exported root) calls a tool on an app
// by path and by host (SNI NAME.localhost), and on a pool's MCP endpoint
// with its key; the TypeScript SDK client does too (NODE_EXTRA_CA_CERTS);
// a handshake for an unbound name gets no certificate; the plain listener
// redirects app and pool requests to HTTPS with 308.
func TestHTTPS(t *testing.T) {
	in := needInterop(t)
	dir := everythingServer(t)
	b := startBerth(t, "", "--https-listen", "127.0.0.1:0")
	f := newHTTPSFront(t, b)
	// A stdio app: the go-sdk's HTTP server refuses any Host but localhost
	// (its own DNS rebinding guard), so an HTTP app built with it cannot be
	// reached by host; behind the stdio bridge the edge guards instead.
	b.cli("app", "deploy", "alpha", "--dir", dir, "--command", "./everything-server", "--transport", "stdio", "--min", "1")
	b.waitReplicas("alpha", 1)
	v := b.appShow("alpha")
	if want := f.hostURL("alpha.localhost", "/mcp"); v.URLs.Host != want || v.URLs.Path != b.info.PublicURL+"/apps/alpha/mcp" {
		t.Fatalf("app show: URLs %+v, want host URL %s", v.URLs, want)
	}
	hc := f.client(nil)

	t.Run("go-sdk by path and by host", func(t *testing.T) {
		for _, u := range []string{v.URLs.Path, v.URLs.Host} {
			text, cs := callTool(t, hc, u, "test_simple_text")
			cs.Close()
			if !strings.Contains(text, "simple text") {
				t.Fatalf("%s: %q", u, text)
			}
		}
		leaf, err := f.handshake("alpha.localhost")
		if err != nil || !slices.Contains(leaf.DNSNames, "alpha.localhost") {
			t.Fatalf("handshake for alpha.localhost: %v %+v", err, leaf)
		}
	})

	t.Run("pool MCP endpoint with its key", func(t *testing.T) {
		key := strings.TrimSpace(b.cli("pool", "credentials", "default"))
		u := b.mcpURL("default")
		if !strings.HasPrefix(u, "https://") {
			t.Fatalf("pool show: MCP endpoint %s", u)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(ctx,
			&mcp.StreamableClientTransport{Endpoint: u, HTTPClient: f.client(http.Header{"X-Ms-Apikey": {key}}), MaxRetries: -1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close()
		c := &mcpClient{ClientSession: cs, t: t}
		id := c.launch()
		if out := c.sh(id, "echo over-https"); !strings.Contains(out.Stdout, "over-https") {
			t.Fatalf("run shell: %+v", out)
		}
		// Without the key: 401 over HTTPS as over HTTP.
		res, err := hc.Post(u, "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("pool MCP without key: %d", res.StatusCode)
		}
	})

	t.Run("TypeScript SDK", func(t *testing.T) {
		t.Setenv("NODE_EXTRA_CA_CERTS", f.rootFile)
		out := in.run(t, in.dir, "ts-app-client.mjs", v.URLs.Path)
		var report struct {
			SessionID string
			Call      struct {
				IsError bool
				Text    string
			}
		}
		if err := json.Unmarshal([]byte(out), &report); err != nil || report.SessionID == "" || report.Call.IsError || !strings.Contains(report.Call.Text, "simple text") {
			t.Fatalf("TypeScript client over HTTPS: %v %s", err, out)
		}
		// Without the root, Node refuses the certificate.
		t.Setenv("NODE_EXTRA_CA_CERTS", "")
		if _, _, err := in.try(in.dir, "ts-app-client.mjs", v.URLs.Path); err == nil {
			t.Fatal("the TypeScript client trusted Berth's certificate without its root")
		}
	})

	t.Run("unbound names get no certificate", func(t *testing.T) {
		for _, name := range []string{"ghost.localhost", "example.com", "alpha.localhost.evil.test"} {
			if _, err := f.handshake(name); err == nil {
				t.Errorf("handshake for unbound %s succeeded", name)
			}
		}
	})

	t.Run("labels are bound and unbound", func(t *testing.T) {
		if _, err := f.handshake("alpha---canary.localhost"); err == nil {
			t.Fatal("a label's name got a certificate before the label existed")
		}
		b.cli("app", "traffic", "alpha", "--label", "alpha--r1=canary")
		if _, err := f.handshake("alpha---canary.localhost"); err != nil {
			t.Fatalf("label's name: %v", err)
		}
		text, cs := callTool(t, hc, f.hostURL("alpha---canary.localhost", "/mcp"), "test_simple_text")
		cs.Close()
		if !strings.Contains(text, "simple text") {
			t.Fatalf("by label host: %q", text)
		}
		b.cli("app", "traffic", "alpha", "--label", "=canary")
		if _, err := f.handshake("alpha---canary.localhost"); err == nil {
			t.Fatal("a removed label's name still gets a certificate")
		}
	})

	t.Run("plain listener redirects to HTTPS", func(t *testing.T) {
		for _, c := range []struct{ method, path, host, want string }{
			{"POST", "/apps/alpha/mcp?x=1", "", b.info.PublicURL + "/apps/alpha/mcp?x=1"},
			{"POST", "/mcp", "alpha.localhost", f.hostURL("alpha.localhost", "/mcp")},
			{"POST", "/pools/default/mcp", "", b.info.PublicURL + "/pools/default/mcp"},
			{"POST", "/pools/default/code/execute?identifier=x", "", b.info.PublicURL + "/pools/default/code/execute?identifier=x"},
		} {
			res := plainRequest(t, c.method, b.info.PlainURL+c.path, c.host)
			if res.StatusCode != http.StatusPermanentRedirect || res.Header.Get("Location") != c.want {
				t.Errorf("plain %s %s (Host %s): %d Location %q, want 308 %s", c.method, c.path, c.host, res.StatusCode, res.Header.Get("Location"), c.want)
			}
		}
	})
}

// TestHTTPSCustomDomains binds custom domains to two apps: requests with
// such a Host (and SNI) reach their app with a certificate for the name;
// a host bound to one app cannot be bound to another (409); invalid hosts
// are refused (400); once deleted, the name gets no certificate and the
// plain listener no longer routes it (404).
func TestHTTPSCustomDomains(t *testing.T) {
	dir := everythingServer(t)
	b := startBerth(t, "", "--https-listen", "127.0.0.1:0")
	f := newHTTPSFront(t, b)
	for _, name := range []string{"alpha", "beta"} {
		b.cli("app", "deploy", name, "--dir", dir, "--command", "./everything-server", "--transport", "stdio", "--min", "1")
		b.waitReplicas(name, 1)
	}
	if _, err := f.handshake("mcp.alpha.test"); err == nil {
		t.Fatal("a handshake for a custom domain succeeded before it was added")
	}
	out := b.cli("app", "hostname", "add", "alpha", "mcp.alpha.test")
	if !strings.Contains(out, "https://mcp.alpha.test:"+f.port+"/mcp") {
		t.Fatalf("hostname add: %s", out)
	}
	b.cli("app", "hostname", "add", "beta", "tools.beta.test")

	// Each name gets its own certificate by SNI, and reaches its app.
	hc := f.client(nil)
	for _, c := range []struct{ host, app string }{{"tools.beta.test", "beta"}, {"mcp.alpha.test", "alpha"}} {
		leaf, err := f.handshake(c.host)
		if err != nil || !slices.Equal(leaf.DNSNames, []string{c.host}) {
			t.Fatalf("handshake for %s: %v %+v", c.host, err, leaf)
		}
		text, cs := callTool(t, hc, f.hostURL(c.host, "/mcp"), "test_simple_text")
		cs.Close()
		if !strings.Contains(text, "simple text") {
			t.Fatalf("%s: %q", c.host, text)
		}
		// Which app answered: the access line of a request by that host.
		probe := "/probe-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		res, err := hc.Get(f.hostURL(c.host, probe))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		b.waitLog(`msg="app request" app=`+c.app+` `, "path="+probe)
	}

	// app hostname list and app show tell the certificate.
	var hosts []controlplane.HostnameView
	b.cliJSON(&hosts, "app", "hostname", "list", "alpha")
	if len(hosts) != 1 || hosts[0].Host != "mcp.alpha.test" || !strings.HasPrefix(hosts[0].Certificate, "valid until") {
		t.Fatalf("hostname list: %+v", hosts)
	}
	if v := b.appShow("alpha"); len(v.Hostnames) != 1 || len(v.URLs.Hostnames) != 1 || v.URLs.Hostnames[0].URL != f.hostURL("mcp.alpha.test", "/mcp") {
		t.Fatalf("app show: %+v %+v", v.Hostnames, v.URLs)
	}
	if out := b.cli("app", "show", "alpha"); !strings.Contains(out, "mcp.alpha.test") {
		t.Fatalf("app show does not list the host:\n%s", out)
	}

	// One host, one app: 409 with a clear message.
	_, errOut, code := b.try("app", "hostname", "add", "beta", "mcp.alpha.test", "--data-dir", b.dataDir)
	if code == 0 || !strings.Contains(errOut, "bound to app alpha") {
		t.Fatalf("binding alpha's host to beta: exit %d: %s", code, errOut)
	}
	if st := b.admin(t, http.MethodPut, "/v1/apps/beta/hostnames/mcp.alpha.test"); st != http.StatusConflict {
		t.Fatalf("PUT another app's host: %d, want 409", st)
	}
	for _, bad := range []string{"10.1.2.3", "Upper.Example.com", "x.localhost", "nodot", "a..b.test", "-a.test"} {
		if st := b.admin(t, http.MethodPut, "/v1/apps/beta/hostnames/"+url.PathEscape(bad)); st != http.StatusBadRequest {
			t.Errorf("PUT host %q: %d, want 400", bad, st)
		}
	}
	if st := b.admin(t, http.MethodPut, "/v1/apps/nosuch/hostnames/a.test"); st != http.StatusNotFound {
		t.Errorf("PUT a host on a missing app: %d, want 404", st)
	}

	// The plain listener redirects a custom domain like the app's host.
	if res := plainRequest(t, "POST", b.info.PlainURL+"/mcp", "mcp.alpha.test"); res.StatusCode != http.StatusPermanentRedirect ||
		res.Header.Get("Location") != f.hostURL("mcp.alpha.test", "/mcp") {
		t.Fatalf("plain request to a custom domain: %d %q", res.StatusCode, res.Header.Get("Location"))
	}

	// Delete: no certificate any more, and the host routes nowhere.
	b.cli("app", "hostname", "delete", "alpha", "mcp.alpha.test")
	if _, err := f.handshake("mcp.alpha.test"); err == nil {
		t.Fatal("a deleted host name still gets a certificate")
	}
	if res := plainRequest(t, "POST", b.info.PlainURL+"/mcp", "mcp.alpha.test"); res.StatusCode != http.StatusNotFound {
		t.Fatalf("plain request to a deleted custom domain: %d, want 404", res.StatusCode)
	}
	if st := b.admin(t, http.MethodDelete, "/v1/apps/alpha/hostnames/mcp.alpha.test"); st != http.StatusNotFound {
		t.Fatalf("deleting it again: %d, want 404", st)
	}
	// Now beta may have it.
	b.cli("app", "hostname", "add", "beta", "mcp.alpha.test")
	// Deleting the app unbinds its hosts.
	b.cli("app", "delete", "beta")
	for _, h := range []string{"mcp.alpha.test", "tools.beta.test", "beta.localhost"} {
		if _, err := f.handshake(h); err == nil {
			t.Errorf("%s still gets a certificate after its app was deleted", h)
		}
	}
	if _, err := f.handshake("alpha.localhost"); err != nil {
		t.Errorf("alpha.localhost: %v", err)
	}

	// berth apply: ingress.customDomains is the app's list of hosts.
	manifest := filepath.Join(t.TempDir(), "app.yaml")
	apply := func(domains string) controlplane.AppView {
		y := fmt.Sprintf(`name: gamma
properties:
  configuration:
    ingress: {transport: stdio, customDomains: %s}
  template:
    containers:
      - command: ["./everything-server"]
        dir: %s
    scale: {minReplicas: 1}
`, domains, dir)
		if err := os.WriteFile(manifest, []byte(y), 0o644); err != nil {
			t.Fatal(err)
		}
		var v controlplane.AppView
		b.cliJSON(&v, "apply", "-f", manifest)
		return v
	}
	if v := apply(`[{name: gamma.example.test, bindingType: SniEnabled}, {name: g2.example.test}]`); len(v.Hostnames) != 2 {
		t.Fatalf("apply with two custom domains: %+v", v.Hostnames)
	}
	for _, h := range []string{"gamma.example.test", "g2.example.test"} {
		if _, err := f.handshake(h); err != nil {
			t.Errorf("%s after apply: %v", h, err)
		}
	}
	if v := apply(`[{name: g2.example.test}]`); len(v.Hostnames) != 1 || v.Hostnames[0].Host != "g2.example.test" {
		t.Fatalf("apply with one: %+v", v.Hostnames)
	}
	if _, err := f.handshake("gamma.example.test"); err == nil {
		t.Error("a custom domain dropped from the manifest still gets a certificate")
	}
	if _, errOut, code := b.try("apply", "-f", writeFile(t, strings.ReplaceAll(mustRead(t, manifest), "{name: g2.example.test}", "{name: g2.example.test, bindingType: Disabled}")), "--data-dir", b.dataDir); code == 0 || !strings.Contains(errOut, "bindingType") {
		t.Errorf("bindingType Disabled: exit %d %s", code, errOut)
	}

	// After a restart, custom domains are routed and bound again.
	b.stop()
	b = startBerth(t, b.dataDir, "--https-listen", "127.0.0.1:0")
	f = newHTTPSFront(t, b)
	b.waitReplicas("gamma", 1)
	text, cs := callTool(t, f.client(nil), f.hostURL("g2.example.test", "/mcp"), "test_simple_text")
	cs.Close()
	if !strings.Contains(text, "simple text") {
		t.Fatalf("custom domain after a restart: %q", text)
	}
	if _, err := f.handshake("gamma.example.test"); err == nil {
		t.Error("a removed custom domain got a certificate after a restart")
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f.yaml")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// admin sends a request to the control API and returns the status.
func (b *berth) admin(t *testing.T, method, path string) int {
	t.Helper()
	tok, err := os.ReadFile(filepath.Join(b.dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(method, b.info.AdminURL+path, strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// TestHTTPSConformance runs the official conformance suite through the
// HTTPS front door (Node trusting the exported root): the results are
// those of the server tested directly.
func TestHTTPSConformance(t *testing.T) {
	in := needInterop(t)
	dir := everythingServer(t)
	b := startBerth(t, "", "--https-listen", "127.0.0.1:0")
	f := newHTTPSFront(t, b)

	port := freePort(t)
	direct := exec.Command(filepath.Join(dir, "everything-server"), "-http", "127.0.0.1:"+strconv.Itoa(port), "-stateless=false")
	if err := direct.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = direct.Process.Kill(); _ = direct.Wait() }()
	waitFor(t, func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	want := runConformance(t, in, fmt.Sprintf("http://127.0.0.1:%d/mcp", port))

	b.cli("app", "deploy", "everything", "--dir", dir, "--command", everythingCommand, "--min", "2", "--max", "2")
	b.waitReplicas("everything", 2)
	t.Setenv("NODE_EXTRA_CA_CERTS", f.rootFile)
	got := runConformance(t, in, b.info.PublicURL+"/apps/everything/mcp")
	t.Logf("direct:\n%s\nthrough Berth's HTTPS front door:\n%s", want.text, got.text)
	// dns-rebinding-protection sends Host: evil.example.com, from which
	// Node takes the SNI: over HTTPS the handshake for that unbound name is
	// refused before any request (the rebinding is stopped one layer
	// earlier, and no TLS server can answer it with a valid certificate);
	// every other scenario is as direct.
	const rebinding = "dns-rebinding-protection"
	if want.status[rebinding] != "pass" || got.status[rebinding] != "fail" || !strings.Contains(got.text, "SSL alert") {
		t.Fatalf("%s: direct %q, through HTTPS %q", rebinding, want.status[rebinding], got.status[rebinding])
	}
	b.waitLog("TLS handshake error", `name not bound: \"evil.example.com\"`)
	delete(want.status, rebinding)
	delete(got.status, rebinding)
	if !maps.Equal(want.status, got.status) {
		t.Fatal("results through the HTTPS front door differ from the direct ones")
	}
	passed := 0
	for _, s := range got.status {
		if s == "pass" {
			passed++
		}
	}
	t.Logf("%d of %d scenarios pass both ways", passed, len(got.status))
}
