package kube_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	corev1 "k8s.io/api/core/v1"

	"github.com/berth-dev/berth/internal/imagetest"
	"github.com/berth-dev/berth/internal/kubetest"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/kube"
	"github.com/berth-dev/berth/sandbox/sandboxtest"
)

// The tests run against the project's test cluster (scripts/kube, found
// through internal/kubetest; make test starts it), with images pushed to
// the registry the cluster pulls from. Each test binary uses a namespace
// of its own and deletes it at the end.

// Addresses of the test cluster (scripts/kube/lib.sh).
const (
	podCIDR  = "10.88.0.0/16"
	podGW    = "10.88.0.1" // the host's side of the bridge: where the host's traffic to Pods comes from
	svcCIDR  = "10.96.0.0/24"
	apiSvcIP = "10.96.0.1"
)

var cluster struct {
	once       sync.Once
	err        error
	cs         kubernetes.Interface
	cfg        *rest.Config
	ns         string
	agentImage string
	image      string
}

func TestMain(m *testing.M) {
	code := m.Run()
	if agentBin.path != "" {
		_ = os.RemoveAll(filepath.Dir(agentBin.path))
	}
	if cluster.ns != "" {
		_ = cluster.cs.CoreV1().Namespaces().Delete(context.Background(), cluster.ns, metav1.DeleteOptions{})
	}
	os.Exit(code)
}

// setup connects to the test cluster (kubetest: skipped unless cluster
// tests are asked for, failed if they are and none answers), makes the
// namespace and pushes the images, once.
func setup(t testing.TB) {
	t.Helper()
	k := kubetest.Cluster(t)
	cluster.once.Do(func() { cluster.err = connect(t, k) })
	if cluster.err != nil {
		t.Fatal(cluster.err)
	}
}

func connect(t testing.TB, k *kubetest.Kube) error {
	cfg := rest.CopyConfig(k.Config)
	cfg.QPS, cfg.Burst = 50, 100
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	cluster.cs, cluster.cfg = cs, cfg
	ns := "berth-kdriver-" + strings.ToLower(rand.Text()[:6])
	if _, err := cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	cluster.ns = ns
	reg := k.Registry
	t0 := time.Now()
	cluster.agentImage = pushAgentImage(t, reg)
	cluster.image = pushDebianImage(t, reg)
	t.Logf("images pushed in %v", time.Since(t0))
	return nil
}

// pushAgentImage builds berth-agent (static) and pushes it as
// /berth-agent on an empty base, as Berth's own image has it.
func pushAgentImage(t testing.TB, reg string) string {
	bin := filepath.Join(t.TempDir(), "berth-agent")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/berth-agent")
	cmd.Dir = moduleRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/berth-agent: %v\n%s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	img := imagetest.Image(t, v1.Config{Entrypoint: []string{"/berth-agent"}},
		imagetest.Layer(t, imagetest.Mode(imagetest.File("berth-agent", string(b)), 0o755)))
	ref := reg + "/berth-kdriver/berth:test"
	return reg + "/berth-kdriver/berth@" + imagetest.Push(t, ref, img).String()
}

// pushDebianImage pushes the sandbox tests' Debian root (bash, python3, a
// setuid-root /usr/local/bin/suid-id) as an image, its layer packed once
// next to the root as the e2e tests do.
func pushDebianImage(t testing.TB, reg string) string {
	base := sandboxtest.DebianLayer(t)
	img := imagetest.Image(t, v1.Config{Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin"}}, base)
	return reg + "/berth-kdriver/debian@" + imagetest.Push(t, reg+"/berth-kdriver/debian:1", img).String()
}

func moduleRoot(t testing.TB) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// apiServer is the API server's address from the kubeconfig.
func apiServer(t *testing.T) string {
	u, err := url.Parse(cluster.cfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// newRuntime returns a kube runtime of class rc ("": runc) in the test
// namespace, with its own instance label, cleaned up when t ends.
func newRuntime(t testing.TB, rc string, edit func(*kube.Options)) *kube.Runtime {
	t.Helper()
	setup(t)
	o := kube.Options{
		Client: cluster.cs, Namespace: cluster.ns, Instance: "t-" + strings.ToLower(rand.Text()[:8]),
		AgentImage: cluster.agentImage, Image: cluster.image, RuntimeClass: rc,
		AgentFrom: []string{podGW + "/32"},
		DenyCIDRs: []string{podCIDR, svcCIDR},
	}
	if edit != nil {
		edit(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rt, err := kube.New(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := rt.Cleanup(ctx); err != nil {
			t.Error(err)
		}
		rt.Close()
	})
	return rt
}

// classes are the runtime classes every test runs with.
// classes are the RuntimeClasses the tests run under, with what the
// conformance suite's driver lacks under each: the test cluster's runsc
// applies no OCI seccomp profile (with oci-seccomp, containerd 1.6's
// RuntimeDefault profile broke Python's http.server inside gVisor: every
// request got EOF), so code under gVisor has no filter of its own.
var classes = []struct {
	name, rc string
	lacks    sandboxtest.Caps
}{{"runc", "", 0}, {"gvisor", "gvisor", sandboxtest.CodeSeccomp}}

func start(t testing.TB, rt sandbox.Runtime, spec sandbox.Spec) sandbox.Sandbox {
	t.Helper()
	return sandboxtest.Start(t, rt, spec)
}

func shell(t *testing.T, sb sandbox.Sandbox, code string) string {
	t.Helper()
	out := sandboxtest.Shell(t, sb, code)
	return strings.TrimSpace(out.Stdout + out.Stderr)
}

// podIP is a sandbox's Pod's IP.
func podIP(t *testing.T, sb sandbox.Sandbox) string {
	t.Helper()
	p, err := cluster.cs.CoreV1().Pods(cluster.ns).Get(context.Background(), "berth-"+sb.ID(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p.Status.PodIP
}

// hostListener listens on the host's side of the Pod bridge: an address
// on the node, which no sandbox may reach.
func hostListener(t *testing.T) string {
	ln, err := net.Listen("tcp", podGW+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "hello %s\n", c.RemoteAddr())
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// connects tries a TCP connection from inside sb to each address and
// says, for each, "open" or why not.
func connects(t *testing.T, sb sandbox.Sandbox, addrs ...string) map[string]string {
	t.Helper()
	code := `
import socket, sys
for a in sys.argv[1:]:
    h, p = a.rsplit(":", 1)
    try:
        socket.create_connection((h, int(p)), timeout=3).close(); print(a, "open")
    except OSError as e:
        print(a, type(e).__name__)
`
	out := sandboxtest.Exec(t, sb, agentCommand(append([]string{"python3", "-c", code}, addrs...)))
	got := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out.Stdout), "\n") {
		if a, r, ok := strings.Cut(l, " "); ok {
			got[a] = r
		}
	}
	if len(got) != len(addrs) {
		t.Fatalf("probe: %+v", out)
	}
	return got
}
