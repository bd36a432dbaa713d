package e2e

import (
	"context"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/internal/imagetest"
	"github.com/berth-dev/berth/internal/kubeclaim"
	"github.com/berth-dev/berth/internal/kubepool"
	"github.com/berth-dev/berth/internal/kubetest"
	"github.com/berth-dev/berth/internal/testutil"
	"github.com/berth-dev/berth/mcpserver"
	"github.com/berth-dev/berth/sandbox/sandboxtest"
)

// Addresses of the test cluster (scripts/kube/lib.sh): the host reaches
// Pods from the bridge's gateway; sandboxes never reach the cluster.
const (
	kubePodGW   = "10.88.0.1"
	kubePodCIDR = "10.88.0.0/16"
	kubeSvcCIDR = "10.96.0.0/24"
)

// kubePoolReplicas starts two `berth up --runtime kube --state kube` on
// this host, sharing a namespace of the test cluster (deleted at the end)
// whose Pods run under gVisor.
func kubePoolReplicas(t *testing.T) (a, b *berth, k *kubetest.Kube, ns string) {
	t.Helper()
	testutil.RequireRoot(t)
	k = kubetest.Cluster(t)
	ns = k.Namespace(t, "h-kpool")
	k.Kubectl(t, "", "apply", "-f", filepath.Join(testutil.ModuleRoot(), "deploy", "kubernetes", "crds"))
	ctx := context.Background()
	// No default pool: this test makes its own.
	if _, err := k.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "berth-meta"},
		Data: map[string]string{"defaultPoolCreated": "test"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	img := imagetest.Image(t, v1.Config{Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin"}}, sandboxtest.DebianLayer(t))
	image := k.Push(t, img, "berth-kpool/debian:1")
	flags := []string{"--state", "kube", "--runtime", "kube", "--runtime-class", "gvisor",
		"--kubeconfig", k.Kubeconfig, "--kube-namespace", ns,
		"--kube-agent-image", k.BerthImage(t), "--kube-image", image,
		"--kube-agent-from", kubePodGW + "/32", "--kube-deny-cidr", kubePodCIDR, "--kube-deny-cidr", kubeSvcCIDR}
	a = startBerth(t, "", flags...)
	b = startBerth(t, "", flags...)
	return a, b, k, ns
}

// poolPods lists a pool's Pods in ns that are not being deleted.
func poolPods(t *testing.T, k *kubetest.Kube, ns, pool string) []corev1.Pod {
	t.Helper()
	l, err := k.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{
		LabelSelector: "berth.dev/owner-kind=pool,berth.dev/owner-name=" + pool})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range l.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out
}

// claimedPod is the Pod claimed for a session identifier ("" if none).
func claimedPod(pods []corev1.Pod, id string) string {
	for _, p := range pods {
		if p.Annotations[kubeclaim.AnnotationSession] == id {
			return p.Name
		}
	}
	return ""
}

func countWarm(pods []corev1.Pod) (warm, claimed int) {
	for _, p := range pods {
		switch {
		case p.Annotations[kubeclaim.AnnotationSession] != "":
			claimed++
		case p.Annotations[kubepool.AnnotationWarm] != "":
			warm++
		}
	}
	return warm, claimed
}

// leaderOf is the process id of the replica that holds the Lease (its
// identity is host-pid-instance).
func leaderOf(t *testing.T, k *kubetest.Kube, ns string) int {
	t.Helper()
	var pid int
	waitUntil(t, "a leader", func() bool {
		l, err := k.Client.CoordinationV1().Leases(ns).Get(context.Background(), "berth-leader", metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return false
		}
		parts := strings.Split(*l.Spec.HolderIdentity, "-")
		if len(parts) < 3 {
			t.Fatalf("lease holder %q", *l.Spec.HolderIdentity)
		}
		pid, err = strconv.Atoi(parts[len(parts)-2])
		return err == nil
	})
	return pid
}

// keyedAlternate is alternate with the pool's key on every request.
type keyedAlternate struct {
	alternate
	key string
}

func (k *keyedAlternate) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Ms-Apikey", k.key)
	return k.alternate.RoundTrip(r)
}

// TestKubePoolAcrossReplicas: a pool of warm gVisor Pods served by two
// Berth replicas on the host. Only the leader keeps Pods warm (counted in
// the API); MCP (launchShell, shell, Python) and the REST data plane with
// requests alternating between the replicas keep each identifier's state
// (files, Python variables) in one Pod, two identifiers never share one;
// the session limit answers 429 from either replica; the cooldown deletes
// the Pods, and neither replica routes to them any more.
func TestKubePoolAcrossReplicas(t *testing.T) {
	a, b, k, ns := kubePoolReplicas(t)
	start := time.Now()
	key := a.createPool("kp", "--type", "shell", "--mcp", "--ready", "2", "--max", "3", "--cooldown", "60s")
	waitUntil(t, "replica b to serve the pool", func() bool { _, _, c := b.try("pool", "show", "kp"); return c == 0 })
	var pods []corev1.Pod
	waitUntil(t, "2 warm Pods", func() bool {
		pods = poolPods(t, k, ns, "kp")
		w, _ := countWarm(pods)
		return w == 2
	})
	t.Logf("pool created → 2 warm gVisor Pods: %v", time.Since(start))
	time.Sleep(3 * time.Second) // two leaders would have made 4 by now
	if pods = poolPods(t, k, ns, "kp"); len(pods) != 2 {
		t.Fatalf("%d Pods for Ready 2: more than one replica keeps Pods warm", len(pods))
	}
	if na, nb := strings.Count(a.logs.String(), "warm sandbox started for the cluster"), strings.Count(b.logs.String(), "warm sandbox started for the cluster"); na+nb != 2 || na*nb != 0 {
		t.Fatalf("warm Pods started by the replicas: %d and %d, want 2 by the leader alone", na, nb)
	}

	hostOf := func(s *berth) string { return strings.TrimPrefix(s.info.PublicURL, "http://") }
	lb := &keyedAlternate{alternate: alternate{hosts: []string{hostOf(a), hostOf(b)}, got: make([]atomic.Int64, 2)}, key: key}
	ctx := context.Background()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: a.info.PublicURL + "/pools/kp/mcp", HTTPClient: &http.Client{Transport: lb}, MaxRetries: -1},
		&mcp.ClientSessionOptions{ProtocolVersion: "2026-07-28"})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	c := &mcpClient{ClientSession: cs, t: t}

	var launches []time.Duration
	launch := func() string {
		t0 := time.Now()
		id := c.launch()
		if r := c.sh(id, "echo up"); r.Stdout != "up\n" {
			t.Fatalf("first shell in %s: %+v", id, r)
		}
		launches = append(launches, time.Since(t0))
		return id
	}
	env1, env2 := launch(), launch()
	// Each call goes to the other replica: write through one, read through
	// the other, several times.
	c.sh(env1, "echo one > /mnt/data/who")
	c.sh(env2, "echo two > /mnt/data/who")
	for range 2 {
		for id, want := range map[string]string{env1: "one\n", env2: "two\n"} {
			if r := c.sh(id, "cat /mnt/data/who"); r.Stdout != want {
				t.Fatalf("%s reads %+v, want %q", id, r, want)
			}
		}
	}
	var py mcpserver.PythonOutput
	c.ok(mcpserver.ToolRunPython, map[string]any{"environmentId": env1, "pythonCode": "x = 41"}, &py)
	c.ok(mcpserver.ToolRunPython, map[string]any{"environmentId": env1, "pythonCode": "x + 1"}, &py)
	if string(py.Result) != "42" {
		t.Fatalf("python state across replicas: %+v", py)
	}
	if lb.got[0].Load() < 5 || lb.got[1].Load() < 5 {
		t.Fatalf("the requests did not alternate: %d, %d", lb.got[0].Load(), lb.got[1].Load())
	}
	pods = poolPods(t, k, ns, "kp")
	p1, p2 := claimedPod(pods, env1), claimedPod(pods, env2)
	if p1 == "" || p2 == "" || p1 == p2 {
		t.Fatalf("Pods of the two environments: %q and %q", p1, p2)
	}

	// The REST data plane (b reads rest-1 below).
	t0 := time.Now()
	if out := a.execute("kp", key, "rest-1", "echo rest > /mnt/data/r; cat /mnt/data/r").Stdout; out != "rest\n" {
		t.Fatalf("rest on a: %q", out)
	}
	launches = append(launches, time.Since(t0))
	pods = poolPods(t, k, ns, "kp")
	if p := claimedPod(pods, "rest-1"); p == "" || p == p1 || p == p2 {
		t.Fatalf("rest-1's Pod %q (the others: %s, %s)", p, p1, p2)
	}
	sort.Slice(launches, func(i, j int) bool { return launches[i] < launches[j] })
	t.Logf("acquire + first exec across replicas (launchShell+shell, REST execute): %v, p50 %v", launches, launches[len(launches)/2])

	// Max 3: a fourth identifier is refused by either replica (b has
	// served only two of the three).
	for _, r := range []*berth{a, b} {
		if got := r.executeRaw("kp", key, "rest-4", "true"); got.Status != http.StatusTooManyRequests {
			t.Fatalf("a fourth session: HTTP %d %s, want 429", got.Status, got.Body)
		}
	}
	if _, claimed := countWarm(poolPods(t, k, ns, "kp")); claimed != 3 {
		t.Fatalf("%d claimed Pods, want 3", claimed)
	}
	// b has not served rest-1 yet (a 429 from b above counted the cluster's
	// sessions, not its own); now it does, from its Pod.
	if out := b.execute("kp", key, "rest-1", "cat /mnt/data/r").Stdout; out != "rest\n" {
		t.Fatalf("rest on b: %q", out)
	}

	// Activity is shared: a session kept busy through the replica that
	// does not lead outlives a cooldown it would not survive otherwise;
	// the others, idle, go.
	a.cli("pool", "update", "kp", "--cooldown", "3s")
	follower := b
	if leaderOf(t, k, ns) == b.cmd.Process.Pid {
		follower = a
	}
	for i := range 6 {
		if out := follower.execute("kp", key, "rest-1", "cat /mnt/data/r").Stdout; out != "rest\n" {
			t.Fatalf("rest-1 kept busy through the follower, %ds after the cooldown changed to 3s: %q", i, out)
		}
		time.Sleep(time.Second)
	}
	// The cooldown (shortened) deletes every session's Pod, whichever
	// replica served it.
	t0 = time.Now()
	waitUntil(t, "the sessions' Pods to be deleted after the cooldown", func() bool {
		pods := poolPods(t, k, ns, "kp")
		return !slices.ContainsFunc([]string{env1, env2, "rest-1"}, func(id string) bool { return claimedPod(pods, id) != "" })
	})
	t.Logf("cooldown 3s → the 3 Pods deleted: %v", time.Since(t0))
	// Neither replica routes to the deleted Pods: the identifier starts
	// over in a new sandbox.
	for _, r := range []*berth{a, b} {
		out := r.execute("kp", key, "rest-1", "cat /mnt/data/r 2>/dev/null || echo fresh").Stdout
		if out != "fresh\n" {
			t.Fatalf("rest-1 after its cooldown: %q", out)
		}
	}
	t.Logf("MCP requests per replica: %d, %d", lb.got[0].Load(), lb.got[1].Load())
	t.Logf("claim + attach (the replicas' logs): %v", attachTimes(a, b))
}

// attachTimes are the times the replicas logged for finding or claiming a
// session's Pod and attaching to it, sorted.
func attachTimes(rs ...*berth) []time.Duration {
	var out []time.Duration
	for _, r := range rs {
		for _, l := range strings.Split(r.logs.String(), "\n") {
			if !strings.Contains(l, "session attached") {
				continue
			}
			_, took, _ := strings.Cut(l, " took=")
			took, _, _ = strings.Cut(took, " ")
			if d, err := time.ParseDuration(took); err == nil {
				out = append(out, d)
			}
		}
	}
	slices.Sort(out)
	return out
}
