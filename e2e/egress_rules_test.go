package e2e

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// httpsInternet is a network namespace of the test's own with an HTTPS
// server on 198.18.2.2:443 (and plain HTTP on :80) whose certificate a test CA signed; the lines it
// prints (SEEN host authorization) are collected.
type httpsInternet struct {
	caFile string
	mu     sync.Mutex
	seen   []string
}

func (h *httpsInternet) Seen() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(h.seen, "\n")
}

const egrUpstream = "198.18.2.2"

func startHTTPSInternet(t *testing.T) *httpsInternet {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e egress CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	caDER, _ := x509.CreateCertificate(rand.Reader, caT, caT, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	lt := &x509.Certificate{SerialNumber: big.NewInt(2), DNSNames: []string{"up.test", "other.test"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, lt, ca, &key.PublicKey, caKey)
	kd, _ := x509.MarshalECPrivateKey(key)
	h := &httpsInternet{caFile: filepath.Join(dir, "ca.pem")}
	for name, b := range map[string][]byte{
		"ca.pem":  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		"crt.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"key.pem": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ns, hostIf := "berth-e2e-egr", "bxegr"
	_ = exec.Command("ip", "netns", "del", ns).Run()
	_ = exec.Command("ip", "link", "del", hostIf).Run()
	run("ip", "netns", "add", ns)
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", hostIf).Run()
		_ = exec.Command("ip", "netns", "del", ns).Run()
	})
	run("ip", "link", "add", hostIf, "type", "veth", "peer", "name", hostIf+"p")
	run("ip", "link", "set", hostIf+"p", "netns", ns)
	run("ip", "addr", "add", "198.18.2.1/30", "dev", hostIf)
	run("ip", "link", "set", hostIf, "up")
	run("ip", "-n", ns, "addr", "add", egrUpstream+"/30", "dev", hostIf+"p")
	run("ip", "-n", ns, "link", "set", hostIf+"p", "up")
	run("ip", "-n", ns, "link", "set", "lo", "up")
	run("ip", "-n", ns, "route", "add", "default", "via", "198.18.2.1")
	srv := exec.Command("ip", "netns", "exec", ns, "/usr/bin/python3", "-c", fmt.Sprintf(`
import ssl, http.server, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        print("SEEN", self.headers.get("Host"), repr(self.headers.get("Authorization")), flush=True)
        body = b"UPSTREAM-OK\n"
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer((%[1]q, 443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(%[2]q, %[3]q)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
plain = http.server.ThreadingHTTPServer((%[1]q, 80), H)
threading.Thread(target=plain.serve_forever, daemon=True).start()
print("READY", flush=True)
srv.serve_forever()
`, egrUpstream, filepath.Join(dir, "crt.pem"), filepath.Join(dir, "key.pem")))
	out, _ := srv.StdoutPipe()
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "READY" {
				close(ready)
				continue
			}
			h.mu.Lock()
			h.seen = append(h.seen, sc.Text())
			h.mu.Unlock()
		}
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("HTTPS upstream did not start")
	}
	return h
}

// egressDNS is the resolver Berth's egress proxy is pointed at: both names
// resolve to the fake internet, and trick.test (allowed) to loopback.
func egressDNS(t *testing.T) string {
	t.Helper()
	answers := map[string]string{"up.test.": egrUpstream, "other.test.": egrUpstream, "trick.test.": "127.0.0.1"}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, qq := range q.Question {
			if a, ok := answers[qq.Name]; ok && qq.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1}, A: net.ParseIP(a)})
			}
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

// TestEgressRules drives allow-lists and injection through the CLI, for
// pools and apps, on a real server: the secret reaches the upstream and
// never the sandbox, the server's output or show.
func TestEgressRules(t *testing.T) {
	up := startHTTPSInternet(t)
	b := startBerth(t, "", "--egress-dns", egressDNS(t), "--egress-upstream-ca", up.caFile)
	const secret = "ghp_E2E_SECRET_41c7a9d2"
	secretFile := filepath.Join(t.TempDir(), "gh")
	if err := os.WriteFile(secretFile, []byte("Bearer "+secret), 0o600); err != nil {
		t.Fatal(err)
	}
	// setSecret sets GH with the real CLI: berth secret set [--pool] OWNER GH.
	setSecret := func(owner ...string) {
		b.cli(append(append([]string{"secret", "set"}, owner...), "gh", "--file", secretFile)...)
	}
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			name := "egr-" + rt
			seen := "SEEN up.test 'Bearer " + secret + "'"
			base := strings.Count(up.Seen(), seen)
			// A pool whose inject rule names a secret it does not have is refused.
			if _, stderr, code := b.try("pool", "create", name, "--runtime", rt, "--egress", "allow=up.test",
				"--egress-inject", "up.test:Authorization=secretref:gh"); code == 0 || !strings.Contains(stderr, "berth secret set --pool "+name+" gh") {
				t.Fatalf("pool with a missing secret: %d %s", code, stderr)
			}
			setSecret("--pool", name)
			if list := b.cli("secret", "list", "--pool", name); !strings.Contains(list, "gh") || strings.Contains(list, secret) {
				t.Errorf("secret list --pool: %s", list)
			}
			key := b.createPool(name, "--runtime", rt, "--ready", "0", "--egress", "allow=up.test,trick.test",
				"--egress-inject", "up.test:Authorization=secretref:gh")
			show := b.cli("pool", "show", name, "-o", "json")
			if !strings.Contains(show, "allow=up.test,trick.test") || !strings.Contains(show, "up.test:Authorization=secretref:gh") || strings.Contains(show, secret) {
				t.Fatalf("pool show: %s", show)
			}
			r := b.execute(name, key, "egr-1", `curl -sS --max-time 20 https://up.test/; curl -sS --noproxy '*' --max-time 20 https://up.test/
curl -sS --max-time 20 https://other.test/ 2>&1; curl -sS --max-time 20 http://other.test/; curl -sS --max-time 20 http://trick.test/
env | grep -c ghp_ ; true`)
			for _, want := range []string{"UPSTREAM-OK\nUPSTREAM-OK\n", "403", "other.test:80 is not in this sandbox's egress allow-list",
				"trick.test resolves to 127.0.0.1, a loopback address"} {
				if !strings.Contains(r.Stdout, want) {
					t.Errorf("want %q in:\n%s\n%s", want, r.Stdout, r.Stderr)
				}
			}
			if n := strings.Count(up.Seen(), seen) - base; n < 2 {
				t.Errorf("upstream saw the header %d times:\n%s", n, up.Seen())
			}
			b.waitLog("egress refused", "other.test")

			// Deleted later, the secret's requests are refused, clearly.
			b.cli("secret", "delete", "--pool", name, "gh")
			r = b.execute(name, key, "egr-1", `curl -sS --max-time 20 https://up.test/`)
			if !strings.Contains(r.Stdout, "names secret gh, which pool/"+name+" does not have") {
				t.Errorf("after the secret's delete: %s %s", r.Stdout, r.Stderr)
			}
			setSecret("--pool", name)

			// Without an allow-list the inject rules go; egress is on/off.
			b.cli("pool", "update", name, "--egress", "enabled")
			show = b.cli("pool", "show", name, "-o", "json")
			if strings.Contains(show, "secretref") || !strings.Contains(show, `"egress": "enabled"`) {
				t.Errorf("after update: %s", show)
			}
			if _, stderr, code := b.try("pool", "update", name, "--egress-inject", "up.test:Authorization=secretref:gh"); code == 0 || !strings.Contains(stderr, "need an allow-list") {
				t.Errorf("inject without allow-list: %d %s", code, stderr)
			}

			// An app: its command calls the API at start, through the proxy.
			app := "egrapp-" + rt
			if _, stderr, code := b.try("app", "deploy", app, "--egress", "allow=up.test", "--egress-inject", "up.test:Authorization=secretref:gh",
				"--command", "exec python3 -m http.server $PORT --bind 127.0.0.1"); code == 0 || !strings.Contains(stderr, "berth secret set "+app+" gh") {
				t.Fatalf("app with a missing secret: %d %s", code, stderr)
			}
			setSecret(app)
			b.cli("app", "deploy", app, "--min", "1", "--egress", "allow=up.test", "--egress-inject", "up.test:Authorization=secretref:gh",
				"--command", `curl -sS --max-time 20 https://up.test/ && echo APP-CALLED; curl -sS --max-time 20 http://other.test/; exec python3 -m http.server $PORT --bind 127.0.0.1`)
			deadline := time.Now().Add(60 * time.Second)
			for {
				logs := b.cli("app", "logs", app)
				if strings.Contains(logs, "UPSTREAM-OK") && strings.Contains(logs, "APP-CALLED") && strings.Contains(logs, "not in this sandbox's egress allow-list") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("app logs: %s", logs)
				}
				time.Sleep(500 * time.Millisecond)
			}
			if n := strings.Count(up.Seen(), seen) - base; n < 3 {
				t.Errorf("upstream saw the app's header %d times in all:\n%s", n, up.Seen())
			}
			// Deleted, the pool and the app leave no CA behind.
			for _, scope := range []string{"pool_" + name, "app_" + app} {
				if _, err := os.Stat(filepath.Join(b.dataDir, "egress", scope, "ca.key")); err != nil {
					t.Errorf("%s: no CA while in use: %v", scope, err)
				}
			}
			b.cli("app", "delete", app)
			b.cli("pool", "delete", name)
			for _, scope := range []string{"pool_" + name, "app_" + app} {
				if _, err := os.Stat(filepath.Join(b.dataDir, "egress", scope)); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s: CA left after delete: %v", scope, err)
				}
			}
		})
	}
	if strings.Contains(b.logs.String(), secret) {
		t.Errorf("the server's output holds the secret")
	}
}

// TestEgressWithAppNames: a sandbox with an egress allow-list and the
// app-to-app tunnel at once. Plain HTTP goes to the agent's listener,
// which sends app names to the gateway and other hosts on to the egress
// proxy; HTTPS goes to the egress proxy. Each proxy variable is set once.
func TestEgressWithAppNames(t *testing.T) {
	up := startHTTPSInternet(t)
	b := startBerth(t, "", "--egress-dns", egressDNS(t), "--egress-upstream-ca", up.caFile)
	deployCall(t, b, "callee", "--ingress", "internal")
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			name := "egrnames-" + rt
			key := b.createPool(name, "--runtime", rt, "--ready", "0", "--egress", "allow=up.test")
			r := b.execute(name, key, "names-1", `curl -sS --max-time 20 -w ' %{http_code}\n' http://callee/echo
curl -sS -k --max-time 20 https://up.test/; curl -sS --max-time 20 http://up.test/
curl -sS --max-time 20 http://other.test/; echo; curl -sS --max-time 20 https://other.test/ 2>&1; echo
python3 -c '
import ssl, urllib.request as u
k = ssl._create_unverified_context()
print("PY", u.urlopen("http://callee/echo").status, u.urlopen("https://up.test/", context=k).read().decode().strip(), u.urlopen("http://up.test/").read().decode().strip())'
env | grep -i '_proxy=' | sort`)
			for _, want := range []string{`"host":"callee"`, " 200\n", "UPSTREAM-OK\nUPSTREAM-OK\n",
				"other.test:80 is not in this sandbox's egress allow-list", "403", "PY 200 UPSTREAM-OK UPSTREAM-OK",
				"HTTP_PROXY=http://127.0.0.1:42356\n", "http_proxy=http://127.0.0.1:42356\n"} {
				if !strings.Contains(r.Stdout, want) {
					t.Errorf("want %q in:\n%s\n%s", want, r.Stdout, r.Stderr)
				}
			}
			seen := map[string]string{}
			for _, l := range strings.Split(r.Stdout, "\n") {
				k, v, ok := strings.Cut(l, "=")
				if !ok || !strings.HasSuffix(strings.ToUpper(k), "_PROXY") {
					continue
				}
				if old, dup := seen[k]; dup {
					t.Errorf("%s twice: %s and %s", k, old, v)
				}
				seen[k] = v
			}
			if seen["HTTPS_PROXY"] == "" || seen["HTTPS_PROXY"] != seen["https_proxy"] || strings.Contains(seen["HTTPS_PROXY"], "42356") {
				t.Errorf("HTTPS_PROXY should be the egress proxy: %q", seen)
			}
			b.waitLog(`msg="app request"`, "app=callee", "caller=pool:"+name)
			if !strings.Contains(up.Seen(), "SEEN up.test None") {
				t.Errorf("the upstream saw no request: %s", up.Seen())
			}
			b.cli("pool", "delete", name)
		})
	}
}
