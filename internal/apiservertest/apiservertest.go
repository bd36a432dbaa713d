// Package apiservertest starts a bare Kubernetes control plane for a test:
// one etcd and one kube-apiserver on loopback ports of their own, no
// kubelet, no controllers. That is enough for objects that need nobody to
// act on them: Leases, Secrets, custom resources, and Pods (which stay
// Pending). The binaries are the cluster's, built and cached by
// scripts/kube/build.sh: $BERTH_KUBE_BIN, else the cache under
// /var/cache/berth/kube.
//
// Tests that call Start are skipped, with a message, when the binaries
// are missing, unless BERTH_KUBE or CI is set: then they fail.
package apiservertest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Server is a running etcd + kube-apiserver.
type Server struct {
	Config *rest.Config
	Client kubernetes.Interface

	apiserver *proc
	stopOnce  sync.Once
}

// Bin finds the directory that holds etcd and kube-apiserver ("" if none).
func Bin() string {
	dirs := []string{os.Getenv("BERTH_KUBE_BIN")}
	cached, _ := filepath.Glob("/var/cache/berth/kube/*/bin")
	for _, d := range append(dirs, cached...) {
		if d == "" {
			continue
		}
		if exe(filepath.Join(d, "etcd")) && exe(filepath.Join(d, "kube-apiserver")) {
			return d
		}
	}
	return ""
}

func exe(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// Start starts etcd and kube-apiserver for t, stopped at its end.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Bin()
	if bin == "" {
		msg := "etcd and kube-apiserver not found (scripts/kube/build.sh builds them; or set BERTH_KUBE_BIN)"
		if os.Getenv("BERTH_KUBE") != "" || os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	etcdURL := startEtcd(t, bin, dir)
	s := &Server{}
	s.startAPIServer(t, bin, dir, etcdURL)
	t.Cleanup(s.Stop)
	return s
}

// Stop stops the apiserver (etcd stops with the test).
func (s *Server) Stop() {
	s.stopOnce.Do(func() { stop(s.apiserver) })
}

func startEtcd(t testing.TB, bin, dir string) string {
	client, peer := freePort(t), freePort(t)
	cu, pu := "http://127.0.0.1:"+client, "http://127.0.0.1:"+peer
	cmd := run(t, filepath.Join(dir, "etcd.log"), filepath.Join(bin, "etcd"), "--name", "test", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", cu, "--advertise-client-urls", cu, "--listen-peer-urls", pu,
		"--initial-advertise-peer-urls", pu, "--initial-cluster", "test="+pu, "--log-level", "warn")
	t.Cleanup(func() { stop(cmd) })
	waitFor(t, 60*time.Second, filepath.Join(dir, "etcd.log"), func() bool {
		resp, err := http.Get(cu + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return cu
}

func (s *Server) startAPIServer(t testing.TB, bin, dir, etcdURL string) {
	token := rand.Text()
	tokens := filepath.Join(dir, "tokens.csv")
	write(t, tokens, token+",admin,admin,system:masters\n")
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	pub, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	write(t, filepath.Join(dir, "sa.key"), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
	write(t, filepath.Join(dir, "sa.pub"), string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})))
	port := freePort(t)
	certs := filepath.Join(dir, "certs")
	log := filepath.Join(dir, "apiserver.log")
	s.apiserver = run(t, log, filepath.Join(bin, "kube-apiserver"),
		"--etcd-servers="+etcdURL, "--etcd-prefix=/registry",
		"--bind-address=127.0.0.1", "--secure-port="+port, "--advertise-address=127.0.0.1",
		"--cert-dir="+certs, "--token-auth-file="+tokens, "--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc", "--service-account-key-file="+filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range=10.250.0.0/24", "--endpoint-reconciler-type=none",
		// No controller-manager makes service accounts.
		"--disable-admission-plugins=ServiceAccount", "--v=0")
	cfg := &rest.Config{Host: "https://127.0.0.1:" + port, BearerToken: token, QPS: 500, Burst: 1000}
	waitFor(t, 120*time.Second, log, func() bool {
		// The apiserver makes its self-signed serving certificate at
		// start: it is its own CA.
		crt, err := os.ReadFile(filepath.Join(certs, "apiserver.crt"))
		if err != nil {
			return false
		}
		cfg.TLSClientConfig = rest.TLSClientConfig{CAData: crt}
		c, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		body, err := c.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil || strings.TrimSpace(string(body)) != "ok" {
			return false
		}
		s.Config, s.Client = cfg, c
		return true
	})
}

// waitFor waits until ready, showing the tail of log if it never is.
func waitFor(t testing.TB, limit time.Duration, log string, ready func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ready() {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log)
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Fatalf("not ready after %s; %s:\n%s", limit, filepath.Base(log), b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// proc is a process this package started.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once it has exited
}

func run(t testing.TB, log, name string, args ...string) *proc {
	t.Helper()
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: exec.Command(name, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); f.Close(); close(p.done) }()
	return p
}

// stop ends a process this package started (by its pid): SIGTERM, then
// SIGKILL after 10 s.
func stop(p *proc) {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func write(t testing.TB, path, s string) {
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(fmt.Errorf("apiservertest: %w", err))
	}
}
