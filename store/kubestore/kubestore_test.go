package kubestore_test

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/berth-dev/berth/internal/kubeapitest"
	"github.com/berth-dev/berth/store/kubestore"
)

// One API server (etcd + kube-apiserver on loopback ports of its own) for
// the package's tests; each test has a namespace of its own.
var (
	api    *kubeapitest.Server
	apiErr error
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		bins, err := kubeapitest.Bins()
		if err != nil {
			apiErr = err
			return m.Run()
		}
		dir, err := os.MkdirTemp("", "kubestore-test-")
		if err != nil {
			panic(err)
		}
		defer os.RemoveAll(dir)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		api, apiErr = kubeapitest.Start(ctx, bins, dir)
		if apiErr == nil {
			defer api.Stop()
			apiErr = api.ApplyCRDs(ctx, "../../deploy/kubernetes/crds")
		}
		return m.Run()
	}())
}

type env struct {
	ns   string
	dyn  dynamic.Interface
	kube kubernetes.Interface
}

// newEnv makes a namespace for the test and clients for it.
func newEnv(t *testing.T) *env {
	t.Helper()
	if api == nil && apiErr != nil && !kubeapitest.Required() {
		t.Skipf("no API server: %v", apiErr)
	}
	if apiErr != nil {
		t.Fatal(apiErr)
	}
	e := &env{ns: "kstore-" + strings.ToLower(t.Name())}
	e.dyn = dynamic.NewForConfigOrDie(api.Config)
	e.kube = kubernetes.NewForConfigOrDie(api.Config)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.ns}}
	if _, err := e.kube.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.kube.CoreV1().Namespaces().Delete(context.Background(), e.ns, metav1.DeleteOptions{}) })
	return e
}

// store opens a store instance with clients of its own, as another Berth
// replica would.
func (e *env) store(t *testing.T) *kubestore.Store {
	t.Helper()
	s, err := kubestore.New(context.Background(), kubestore.Options{Config: api.Config, Namespace: e.ns})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *env) res(r schema.GroupVersionResource) dynamic.ResourceInterface {
	return e.dyn.Resource(r).Namespace(e.ns)
}

func (e *env) get(t *testing.T, r schema.GroupVersionResource, name string) *unstructured.Unstructured {
	t.Helper()
	u, err := e.res(r).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("%s %s: %v", r.Resource, name, err)
	}
	return u
}

// notSecrets is every object of the namespace but its Secrets, as JSON:
// what a reader of the custom resources and ConfigMaps sees.
func (e *env) notSecrets(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	var b strings.Builder
	for _, r := range []schema.GroupVersionResource{kubestore.PoolResource, kubestore.AppResource} {
		l, err := e.res(r).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		j, _ := json.Marshal(l)
		b.Write(j)
	}
	cms, err := e.kube.CoreV1().ConfigMaps(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	j, _ := json.Marshal(cms)
	b.Write(j)
	return b.String()
}

// eventually polls cond for up to 20 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
