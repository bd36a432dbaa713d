// Package kubetest gives tests the one-node Kubernetes cluster that
// scripts/kube/up.sh starts (make kube-up): a client for it, a namespace
// per test, and images pushed to the registry its containerd pulls from.
//
// Tests that call Cluster are skipped, with a message, unless BERTH_KUBE is
// set or they run in CI (CI=true); then a missing cluster fails them. The
// cluster is found through the environment up.sh writes: the variables
// KUBECONFIG and BERTH_KUBE_REGISTRY when BERTH_KUBE_REGISTRY is set, else
// the file $BERTH_KUBE_DIR/env (default /var/lib/berth-kube/env).
package kubetest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// DefaultDir is where up.sh keeps the cluster's state and env file.
const DefaultDir = "/var/lib/berth-kube"

// Env is what up.sh writes about a running cluster.
type Env struct {
	Kubeconfig string // KUBECONFIG
	Registry   string // BERTH_KUBE_REGISTRY: 127.0.0.1:PORT, plain HTTP
	Bin        string // BERTH_KUBE_BIN: the cluster's binaries (kubectl…)
	Dir        string // BERTH_KUBE_DIR: the cluster's work dir
	BerthImage string // BERTH_KUBE_BERTH_IMAGE: Berth's own image (name@digest), if pushed
}

// LoadEnv finds the cluster's environment (see the package doc).
func LoadEnv() (Env, error) {
	if os.Getenv("BERTH_KUBE_REGISTRY") != "" {
		e := Env{
			Kubeconfig: os.Getenv("KUBECONFIG"), Registry: os.Getenv("BERTH_KUBE_REGISTRY"),
			Bin: os.Getenv("BERTH_KUBE_BIN"), Dir: os.Getenv("BERTH_KUBE_DIR"),
			BerthImage: os.Getenv("BERTH_KUBE_BERTH_IMAGE"),
		}
		if e.Kubeconfig == "" {
			return Env{}, fmt.Errorf("BERTH_KUBE_REGISTRY is set but KUBECONFIG is not")
		}
		return e, nil
	}
	dir := os.Getenv("BERTH_KUBE_DIR")
	if dir == "" {
		dir = DefaultDir
	}
	return ReadEnvFile(filepath.Join(dir, "env"))
}

// ReadEnvFile parses the "export NAME=VALUE" lines up.sh writes.
func ReadEnvFile(path string) (Env, error) {
	f, err := os.Open(path)
	if err != nil {
		return Env{}, fmt.Errorf("no cluster environment (start one with make kube-up): %w", err)
	}
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimPrefix(strings.TrimSpace(sc.Text()), "export ")
		if k, v, ok := strings.Cut(line, "="); ok {
			vars[k] = v
		}
	}
	if err := sc.Err(); err != nil {
		return Env{}, err
	}
	e := Env{Kubeconfig: vars["KUBECONFIG"], Registry: vars["BERTH_KUBE_REGISTRY"], Bin: vars["BERTH_KUBE_BIN"],
		Dir: vars["BERTH_KUBE_DIR"], BerthImage: vars["BERTH_KUBE_BERTH_IMAGE"]}
	if e.Kubeconfig == "" || e.Registry == "" {
		return Env{}, fmt.Errorf("%s lacks KUBECONFIG or BERTH_KUBE_REGISTRY", path)
	}
	return e, nil
}

// Kube is a running cluster as a test sees it.
type Kube struct {
	Env
	Config *rest.Config
	Client kubernetes.Interface
}

// Required reports whether cluster tests must run (BERTH_KUBE or CI set).
func Required() bool { return os.Getenv("BERTH_KUBE") != "" || os.Getenv("CI") != "" }

// Cluster returns the running cluster, skips the test when cluster tests
// are not asked for, and fails it when they are but no cluster answers.
func Cluster(t testing.TB) *Kube {
	t.Helper()
	if !Required() {
		t.Skip("no Kubernetes cluster asked for: start one with `make kube-up` and set BERTH_KUBE=1")
	}
	k, err := Connect(context.Background())
	if err != nil {
		t.Fatalf("kubetest: BERTH_KUBE or CI is set but the cluster is not usable: %v", err)
	}
	return k
}

// Connect loads the environment and checks that the API server is ready.
func Connect(ctx context.Context) (*Kube, error) {
	e, err := LoadEnv()
	if err != nil {
		return nil, err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", e.Kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 50, 100
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
		return nil, fmt.Errorf("API server %s not ready: %w", cfg.Host, err)
	}
	return &Kube{Env: e, Config: cfg, Client: cs}, nil
}

// Namespace creates a namespace named berth-<prefix>-<random> for this test
// and deletes it (with everything in it) when the test ends.
func (k *Kube) Namespace(t testing.TB, prefix string) string {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := fmt.Sprintf("berth-%s-%s", strings.ToLower(prefix), hex.EncodeToString(b))
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name,
		Labels: map[string]string{"app.kubernetes.io/managed-by": "berth-test"}}}
	ctx := context.Background()
	if _, err := k.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		zero := int64(0)
		err := k.Client.CoreV1().Namespaces().Delete(context.Background(), name,
			metav1.DeleteOptions{GracePeriodSeconds: &zero})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	return name
}

// Kubectl runs the cluster's kubectl with args (stdin, if not empty, as its
// input) and returns its output; it fails the test when kubectl fails.
func (k *Kube) Kubectl(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	if k.Bin == "" {
		t.Fatal("kubetest: the environment names no BERTH_KUBE_BIN (kubectl)")
	}
	cmd := exec.Command(filepath.Join(k.Bin, "kubectl"), append([]string{"--kubeconfig", k.Kubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
