package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/internal/kubeapitest"
	"github.com/berth-dev/berth/internal/kubetest"
)

// kubeAppCluster is a namespace of the test cluster with Berth's CRDs, and
// the flags of a `berth up` whose state and sandboxes are in it.
type kubeAppCluster struct {
	k     *kubetest.Kube
	ns    string
	flags []string
	image string // the echoapp's image
}

// newKubeAppCluster makes the test's namespace (deleted after) and pushes
// the echoapp's image.
func newKubeAppCluster(t *testing.T) *kubeAppCluster {
	t.Helper()
	k := kubetest.Cluster(t)
	ctx := context.Background()
	if err := (&kubeapitest.Server{Config: k.Config}).ApplyCRDs(ctx, "../deploy/kubernetes/crds"); err != nil {
		t.Fatal(err)
	}
	ns := k.Namespace(t, "h-kapps")
	// No default pool: its warm Pods are not what these tests count.
	if _, err := k.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "berth-meta"},
		Data: map[string]string{"defaultPoolCreated": "test"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c := &kubeAppCluster{k: k, ns: ns, image: k.StaticImage(t, "./e2e/testdata/echoapp")}
	c.flags = []string{"--state", "kube", "--runtime", "kube", "--kubeconfig", k.Env.Kubeconfig, "--kube-namespace", ns,
		"--kube-agent-image", k.BerthImage(t), "--runtime-class=", "--kube-agent-from", "10.88.0.1/32",
		"--insecure-registry", k.Env.Registry}
	return c
}

// start starts a `berth up` on the cluster's namespace (env added to its
// environment).
func (c *kubeAppCluster) start(t *testing.T, env ...string) *berth {
	t.Helper()
	return startBerthEnv(t, env, "", c.flags...)
}

// appPods lists the app's Pods that are not on their way out, by name.
func (c *kubeAppCluster) appPods(t *testing.T, app string) []corev1.Pod {
	t.Helper()
	list, err := c.k.Client.CoreV1().Pods(c.ns).List(context.Background(), metav1.ListOptions{
		LabelSelector: "berth.dev/owner-kind=app,berth.dev/owner-name=" + app})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func podNames(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}

func hostOf(s *berth) string { return strings.TrimPrefix(s.info.PublicURL, "http://") }

// replicaOf asks the echoapp in an MCP session which replica serves it.
func replicaOf(ctx context.Context, cs *mcp.ClientSession) (string, error) {
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "getenv", Arguments: map[string]any{"name": "BERTH_REPLICA"}})
	if err != nil {
		return "", err
	}
	if len(res.Content) != 1 {
		return "", fmt.Errorf("getenv: %d contents", len(res.Content))
	}
	return res.Content[0].(*mcp.TextContent).Text, nil
}

// TestKubeAppReplicasShared: two `berth up --state kube --runtime kube` on
// one namespace run an app with min 3 replicas as one set of 3 Pods (not
// 6): the second adopts the first's Pods. An MCP session whose requests
// alternate between the two keeps its replica; its Pod killed, the
// session gets 404 through either Berth and a new session works; the
// replica is replaced, still 3 Pods. A Berth replica that stops leaves
// them to the other.
func TestKubeAppReplicasShared(t *testing.T) {
	c := newKubeAppCluster(t)
	a := c.start(t)
	if _, errOut, code := a.try("app", "deploy", "echo", "--image", c.image, "--min", "3", "--max", "5"); code != 0 {
		t.Fatalf("deploy: %s", errOut)
	}
	a.waitReplicas("echo", 3)
	if pods := c.appPods(t, "echo"); len(pods) != 3 {
		t.Fatalf("%d app Pods after the first Berth: %v", len(pods), podNames(pods))
	}
	start := time.Now()
	b := c.start(t)
	b.waitReplicas("echo", 3)
	t.Logf("second Berth replica: started and adopted 3 replicas in %v", time.Since(start).Round(time.Millisecond))
	time.Sleep(2 * time.Second) // a replica that started Pods of its own would have by now
	pods := c.appPods(t, "echo")
	if len(pods) != 3 {
		t.Fatalf("%d app Pods with two Berth replicas, want 3: %v", len(pods), podNames(pods))
	}
	t.Logf("app Pods with 2 Berth replicas and min 3: %d %v", len(pods), podNames(pods))
	idsA, idsB := replicaIDs(a, "echo"), replicaIDs(b, "echo")
	if strings.Join(idsA, ",") != strings.Join(idsB, ",") {
		t.Fatalf("the Berths run different replicas: %v and %v", idsA, idsB)
	}

	// A session alternating between the Berth replicas stays on its replica.
	lb := &alternate{hosts: []string{hostOf(a), hostOf(b)}, got: make([]atomic.Int64, 2)}
	ctx := context.Background()
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil)
	connect := func() *mcp.ClientSession {
		cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: a.info.PublicURL + "/apps/echo/mcp",
			HTTPClient: &http.Client{Transport: lb}, MaxRetries: -1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	cs := connect()
	defer cs.Close()
	first, err := replicaOf(ctx, cs)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		rep, err := replicaOf(ctx, cs)
		if err != nil || rep != first {
			t.Fatalf("call %d: replica %q (%v), want %q", i, rep, err, first)
		}
	}
	if lb.got[0].Load() < 3 || lb.got[1].Load() < 3 {
		t.Fatalf("the requests did not alternate: %d, %d", lb.got[0].Load(), lb.got[1].Load())
	}

	// Its Pod killed: 404 through either Berth, then a new session works.
	zero := int64(0)
	if err := c.k.Client.CoreV1().Pods(c.ns).Delete(ctx, "berth-"+first, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for _, s := range []*berth{a, b} {
		waitUntil(t, "the session's replica to be gone", func() bool {
			code, _ := call(t, s.info.PublicURL+"/apps/echo/mcp", cs.ID(), "tools/list")
			return code == http.StatusNotFound
		})
	}
	if _, err := replicaOf(ctx, cs); err == nil {
		t.Fatal("the session of a killed Pod still answers")
	}
	cs2 := connect()
	defer cs2.Close()
	if _, err := replicaOf(ctx, cs2); err != nil {
		t.Fatalf("a new session after the kill: %v", err)
	}
	t.Logf("Pod killed → 404 on both Berths and a new session in %v", time.Since(killed).Round(time.Millisecond))
	a.waitReplicas("echo", 3)
	b.waitReplicas("echo", 3)
	waitUntil(t, "the killed replica to be replaced", func() bool { return len(c.appPods(t, "echo")) == 3 })
	time.Sleep(2 * time.Second)
	pods = c.appPods(t, "echo")
	if len(pods) != 3 {
		t.Fatalf("%d app Pods after the replacement, want 3: %v", len(pods), podNames(pods))
	}

	// A Berth replica that stops leaves the Pods to the other.
	cs.Close()
	cs2.Close()
	stopping := time.Now()
	a.stop()
	t.Logf("first Berth replica stopped in %v", time.Since(stopping).Round(time.Millisecond))
	time.Sleep(time.Second)
	if after := c.appPods(t, "echo"); len(after) != 3 || after[0].UID != pods[0].UID {
		t.Fatalf("app Pods after a Berth replica stopped: %v, had %v", podNames(after), podNames(pods))
	}
	if ready := b.waitReplicas("echo", 3); len(ready.Replicas) != 3 {
		t.Fatal(ready)
	}
	sid, _ := initialize(t, b.info.PublicURL+"/apps/echo/mcp")
	if code, _ := call(t, b.info.PublicURL+"/apps/echo/mcp", sid, "tools/list"); code != http.StatusOK {
		t.Fatalf("a session on the remaining Berth replica: HTTP %d", code)
	}
}

func replicaIDs(b *berth, app string) []string {
	var ids []string
	for _, r := range b.appShow(app).Replicas {
		ids = append(ids, r.ID)
	}
	sort.Strings(ids)
	return ids
}

// waitLeader waits until b says it leads the Berth replicas.
func waitLeader(t *testing.T, b *berth) {
	t.Helper()
	waitUntil(t, "the first Berth replica to lead", func() bool {
		return strings.Contains(b.logs.String(), `msg="leader elected"`) && strings.Contains(b.logs.String(), "self=true")
	})
}

// TestKubeAppScaleDownSeesOtherReplicas: an app at zero (min 0) on two
// Berth replicas sharing a namespace; requests through the replica that
// does not lead start its Pod (the request hold at zero) and keep it: the
// leader, which sees none of them, reads the busy marks the other puts on
// the Pod and does not scale down under that traffic. Once the traffic
// stops, the leader scales to zero and the other drops the replica rather
// than start it again. With the marks switched off (the "unmarked" case),
// the leader scales the Pod down under the same traffic. The replica that
// does not lead scales up, and the leader adopts the new Pod.
func TestKubeAppScaleDownSeesOtherReplicas(t *testing.T) {
	for _, marks := range []bool{true, false} {
		name := map[bool]string{true: "marked", false: "unmarked"}[marks]
		t.Run(name, func(t *testing.T) { testKubeAppScaleDown(t, marks) })
	}
}

func testKubeAppScaleDown(t *testing.T, marks bool) {
	c := newKubeAppCluster(t)
	leader := c.start(t)
	waitLeader(t, leader)
	var env []string
	if !marks {
		env = []string{"BERTH_APP_BUSY_MARKS=off"}
	}
	other := c.start(t, env...)
	if _, errOut, code := leader.try("app", "deploy", "idle", "--image", c.image, "--min", "0", "--max", "2", "--concurrency", "1", "--scale-down-after", "3s"); code != 0 {
		t.Fatalf("deploy: %s", errOut)
	}
	waitUntil(t, "the other replica to know the app", func() bool { _, _, code := other.try("app", "show", "idle"); return code == 0 })
	if pods := c.appPods(t, "idle"); len(pods) != 0 {
		t.Fatalf("app Pods at min 0: %v", podNames(pods))
	}
	start := time.Now()
	if r := other.do(http.MethodGet, "/apps/idle/echo", nil, nil); r.Status != http.StatusOK {
		t.Fatalf("first request through the other replica: %d %s", r.Status, r.Body)
	}
	t.Logf("from zero through the replica that does not lead: %v", time.Since(start).Round(time.Millisecond))
	pods := c.appPods(t, "idle")
	if len(pods) != 1 {
		t.Fatalf("app Pods after the first request: %v", podNames(pods))
	}
	uid := pods[0].UID
	waitUntil(t, "the leader to adopt the replica", func() bool { return len(leader.appShow("idle").Replicas) == 1 })

	// Traffic through the other replica only, for 3× the scale-down delay.
	removed := false
	for end := time.Now().Add(9 * time.Second); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		r := other.do(http.MethodGet, "/apps/idle/echo", nil, nil)
		if pods := c.appPods(t, "idle"); len(pods) != 1 || pods[0].UID != uid || r.Status != http.StatusOK {
			t.Logf("under traffic: HTTP %d, Pods %v", r.Status, podNames(pods))
			removed = true
			break
		}
	}
	switch {
	case marks && removed:
		t.Fatal("the leader scaled down the Pod the other replica sends requests to")
	case !marks && !removed:
		t.Fatal("without busy marks the leader kept the Pod: the test would not see the marks missing")
	case !marks:
		waitUntil(t, "the leader to log its scale-down", func() bool { return strings.Contains(leader.logs.String(), `msg="scaled down"`) })
		t.Log("without busy marks, the leader scaled the Pod down under the other replica's traffic")
		return
	}

	// Idle: the leader scales to zero; the other drops the replica.
	stopped := time.Now()
	waitUntil(t, "the leader to scale to zero", func() bool { return len(c.appPods(t, "idle")) == 0 })
	t.Logf("traffic stopped → no Pod: %v", time.Since(stopped).Round(time.Millisecond))
	waitUntil(t, "the other replica to drop its replica", func() bool { return len(other.appShow("idle").Replicas) == 0 })
	time.Sleep(3 * time.Second)
	if pods := c.appPods(t, "idle"); len(pods) != 0 {
		t.Fatalf("a replica scaled down by the leader came back: %v", podNames(pods))
	}
	if !strings.Contains(other.logs.String(), "replica scaled down by the leader") {
		t.Fatal("the other replica did not log that the leader scaled its replica down")
	}
	if strings.Contains(other.logs.String(), `msg="scaled down"`) || !strings.Contains(leader.logs.String(), `msg="scaled down"`) {
		t.Fatal("the replica that does not lead scaled down, or the leader did not")
	}
	// The request hold at zero works through either replica.
	for _, s := range []*berth{other, leader} {
		if r := s.do(http.MethodGet, "/apps/idle/echo", nil, nil); r.Status != http.StatusOK {
			t.Fatalf("from zero again: %d %s", r.Status, r.Body)
		}
	}

	// The replica that does not lead scales up (concurrency 1, two MCP
	// sessions each holding a stream open): one more Pod, which the
	// leader adopts.
	ctx := context.Background()
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil)
	for range 2 {
		cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: other.info.PublicURL + "/apps/idle/mcp"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close()
	}
	waitUntil(t, "the other replica to scale up to 2", func() bool { return len(c.appPods(t, "idle")) == 2 })
	waitUntil(t, "the leader to adopt the new replica", func() bool { return len(leader.appShow("idle").Replicas) == 2 })
	t.Logf("scaled up through the replica that does not lead: Pods %v", podNames(c.appPods(t, "idle")))
}
