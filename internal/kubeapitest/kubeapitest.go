// Package kubeapitest starts a bare Kubernetes API server for tests: etcd
// and kube-apiserver (no nodes, no controllers) on loopback ports of their
// own, with the binaries the project's scripts build (scripts/kube), so
// that custom resources, Secrets, watches and optimistic concurrency are
// tested against the real thing.
package kubeapitest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
)

// Bins returns the directory that holds etcd and kube-apiserver, as the
// project's scripts build and cache them (scripts/kube/build.sh):
// $BERTH_KUBE_BIN, else the cache under /var/cache/berth/kube; or an error
// saying how to get them.
func Bins() (string, error) {
	dirs := []string{os.Getenv("BERTH_KUBE_BIN")}
	cached, _ := filepath.Glob("/var/cache/berth/kube/*/bin")
	for _, d := range append(dirs, cached...) {
		if d != "" && executable(filepath.Join(d, "etcd")) && executable(filepath.Join(d, "kube-apiserver")) {
			return d, nil
		}
	}
	return "", errors.New("etcd and kube-apiserver not found: scripts/kube/build.sh builds them (make test does), or set BERTH_KUBE_BIN")
}

// Required reports whether tests must fail, not skip, without the
// binaries: in CI, or with BERTH_KUBE set (make test sets it).
func Required() bool { return os.Getenv("BERTH_KUBE") != "" || os.Getenv("CI") != "" }

func executable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// Server is a running etcd and kube-apiserver.
type Server struct {
	// Config reaches the API server as a cluster administrator.
	Config *rest.Config
	// Kubeconfig is a kubeconfig file for the same.
	Kubeconfig string
	procs      []*proc
	dir        string
}

type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start starts etcd and kube-apiserver with their state under dir and
// waits until the API server is ready (or ctx is done).
func Start(ctx context.Context, bins, dir string) (*Server, error) {
	s := &Server{dir: dir}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	if err := s.start(filepath.Join(bins, "etcd"), "etcd",
		"--name=default", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL, "--unsafe-no-fsync", "--log-level=warn"); err != nil {
		return nil, err
	}
	token, err := s.credentials()
	if err != nil {
		s.Stop()
		return nil, err
	}
	port := strconv.Itoa(ports[2])
	if err := s.start(filepath.Join(bins, "kube-apiserver"), "kube-apiserver",
		"--etcd-servers="+etcdURL, "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+port,
		"--cert-dir="+filepath.Join(dir, "certs"), "--token-auth-file="+filepath.Join(dir, "tokens.csv"),
		"--authorization-mode=RBAC", "--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+filepath.Join(dir, "sa.key"), "--service-account-signing-key-file="+filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range=10.250.0.0/24", "--endpoint-reconciler-type=none",
		"--disable-admission-plugins=ServiceAccount", "--v=0"); err != nil {
		s.Stop()
		return nil, err
	}
	s.Config = &rest.Config{Host: "https://127.0.0.1:" + port, BearerToken: token,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true}, QPS: 200, Burst: 400}
	if err := s.writeKubeconfig(token, port); err != nil {
		s.Stop()
		return nil, err
	}
	if err := s.waitReady(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) start(bin, name string, args ...string) error {
	logf, err := os.Create(filepath.Join(s.dir, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Never outlives the test binary, even one that crashes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	logf.Close()
	p := &proc{cmd: cmd, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	s.procs = append(s.procs, p)
	return nil
}

// credentials writes the administrator's token and the service-account
// signing key; it returns the token.
func (s *Server) credentials() (string, error) {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	token := hex.EncodeToString(b)
	if err := os.WriteFile(filepath.Join(s.dir, "tokens.csv"), []byte(token+",admin,admin,system:masters\n"), 0o600); err != nil {
		return "", err
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return "", err
	}
	return token, os.WriteFile(filepath.Join(s.dir, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

func (s *Server) writeKubeconfig(token, port string) error {
	s.Kubeconfig = filepath.Join(s.dir, "kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: "https://127.0.0.1:%s", insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: %q}
contexts:
- name: test
  context: {cluster: test, user: admin, namespace: default}
current-context: test
`, port, token)
	return os.WriteFile(s.Kubeconfig, []byte(cfg), 0o600)
}

func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	rt, err := rest.TransportFor(s.Config)
	if err != nil {
		return err
	}
	c := &http.Client{Transport: rt, Timeout: 5 * time.Second}
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.Config.Host+"/readyz", nil)
		if resp, err := c.Do(req); err == nil {
			var b bytes.Buffer
			_, _ = b.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, b.String())
		} else {
			last = err.Error()
		}
		for _, p := range s.procs {
			select {
			case <-p.exited:
				return fmt.Errorf("%s exited (logs in %s)", p.cmd.Path, s.dir)
			default:
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready (%s; logs in %s): %w", last, s.dir, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Stop kills what Start started and waits for it.
func (s *Server) Stop() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		p := s.procs[i]
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	}
	s.procs = nil
}

func freePorts(n int) ([]int, error) {
	var out []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}
