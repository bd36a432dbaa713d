package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/controlplane"
	"github.com/berth-dev/berth/internal/kubetest"
	"github.com/berth-dev/berth/internal/testutil"
)

// inCluster is Berth installed from deploy/kubernetes into a namespace of
// the test cluster, reached from the host through its Service's ClusterIP
// (kube-proxy on this node), and driven with the berth CLI over its
// control API.
type inCluster struct {
	t  *testing.T
	k  *kubetest.Kube
	ns string
	// front is the Service's port 80 relayed to loopback, each connection
	// through kube-proxy to either replica (a client's Host is then
	// 127.0.0.1, which the conformance suite and the go-sdk server's
	// DNS-rebinding protection want); admin is http://CLUSTERIP:8081.
	front, admin string
	token        string
	bin          string
}

// TestInCluster installs Berth with the manifests (2 replicas, its own
// image, the Role of rbac.yaml), deploys the go-sdk conformance server from
// the cluster's registry with `berth app deploy` (3 replicas) and with
// `kubectl apply` of an App, and runs the conformance suite through the
// Service: the same results as the server directly. Then it deletes a
// Berth Pod while clients call tools in their sessions through the
// Service, gracefully and then at once: the configuration stays, and the
// sessions keep working.
func TestInCluster(t *testing.T) {
	k := kubetest.Cluster(t)
	in := needInterop(t)
	c := installBerth(t, k)
	ref := k.Push(t, everythingImage(t), "berth-test/everything:incl")

	port := freePort(t)
	direct := exec.Command(filepath.Join(everythingServer(t), "everything-server"), "-http", "127.0.0.1:"+strconv.Itoa(port), "-stateless=false")
	if err := direct.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = direct.Process.Kill(); _ = direct.Wait() }()
	waitTCP(t, port)
	want := runConformance(t, in, "http://127.0.0.1:"+strconv.Itoa(port)+"/mcp")

	c.cli("app", "deploy", "everything", "--image", ref, "--min", "3", "--max", "3")
	c.waitReady("everything", 3)
	c.applyApp("everything-cr", ref)
	c.waitReady("everything-cr", 1)
	got := runConformance(t, in, c.front+"/apps/everything/mcp")
	t.Logf("direct:\n%s\nthrough the in-cluster front door (3 app replicas, 2 Berth replicas):\n%s", want.text, got.text)
	if !maps.Equal(want.status, got.status) {
		t.Fatalf("results through the in-cluster front door differ from the direct ones")
	}
	t.Logf("%d of %d scenarios pass both ways", passed(got), len(got.status))
	if s, ok := mcpSession(http.DefaultClient, c.front+"/apps/everything-cr/mcp"); !ok {
		t.Fatalf("the App applied with kubectl does not answer: %s", s)
	}

	c.killUnderLoad(30) // kubectl delete pod: SIGTERM, Berth stops gracefully
	c.killUnderLoad(0)  // a crash: the Pod is gone at once
	c.noForbidden()
}

func passed(c conformance) int {
	n := 0
	for _, s := range c.status {
		if s == "pass" {
			n++
		}
	}
	return n
}

// installBerth installs Berth with scripts/kube/deploy-berth.sh into a new
// namespace berth-incl-*, with test-only additions: a sidecar that gives
// Berth's Pods the cluster's registry at the address the node has it
// (127.0.0.1:5000, loopback), so Berth and the kubelet pull the same
// reference. --memory-capacity=1Gi (Berth's Pod's memory limit) is
// there to show that no host admission budget applies to Pods: it would
// admit 1.5 GiB, less than the test's 4 app replicas.
func installBerth(t *testing.T, k *kubetest.Kube) *inCluster {
	t.Helper()
	ns := k.Namespace(t, "incl")
	img, probe := k.TreeBerthImage(t), k.ProbeImage(t)
	relay := registryRelay(t, k)
	patch := writeFile(t, fmt.Sprintf(`
- {op: add, path: /spec/template/spec/containers/-, value: {name: registry, image: %q,
   args: [forward, %q, %q], securityContext: {readOnlyRootFilesystem: true, allowPrivilegeEscalation: false}}}
- {op: add, path: /spec/template/spec/containers/0/args/-, value: --insecure-registry=%s}
- {op: add, path: /spec/template/spec/containers/0/args/-, value: --memory-capacity=1Gi}
`, probe, k.Registry, relay, k.Registry))
	start := time.Now()
	cmd := exec.Command(filepath.Join(testutil.ModuleRoot(), "scripts", "kube", "deploy-berth.sh"), ns, img, "150s")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+k.Kubeconfig, "BERTH_KUBE_BIN="+k.Bin, "BERTH_DEPLOY_PATCH="+patch)
	out, err := cmd.CombinedOutput()
	c := &inCluster{t: t, k: k, ns: ns, bin: testutil.BerthBinary(t)}
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs()
		}
	})
	if err != nil {
		t.Fatalf("deploy-berth.sh: %v\n%s", err, out)
	}
	t.Logf("apply → 2 Berth replicas Ready: %v", time.Since(start).Round(time.Millisecond))
	ctx := context.Background()
	svc, err := k.Client.CoreV1().Services(ns).Get(ctx, "berth", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.front = "http://" + loopbackRelay(t, net.JoinHostPort(svc.Spec.ClusterIP, "80"))
	c.admin = "http://" + net.JoinHostPort(svc.Spec.ClusterIP, "8081")
	sec, err := k.Client.CoreV1().Secrets(ns).Get(ctx, "berth-admin-token", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.token = string(sec.Data["value"])
	c.checkPods(img)
	return c
}

// checkPods checks what the manifests promise about Berth's Pods: 2 Ready,
// non-root, a read-only root, the ServiceAccount of rbac.yaml.
func (c *inCluster) checkPods(img string) {
	c.t.Helper()
	pods := c.berthPods()
	if len(pods) != 2 {
		c.t.Fatalf("%d Berth Pods, want 2", len(pods))
	}
	for _, p := range pods {
		sc, ctr := p.Spec.SecurityContext, p.Spec.Containers[0]
		if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || ctr.SecurityContext.ReadOnlyRootFilesystem == nil ||
			!*ctr.SecurityContext.ReadOnlyRootFilesystem || p.Spec.ServiceAccountName != "berth" || ctr.Image != img {
			c.t.Fatalf("Berth Pod %s: not the manifests' (non-root, read-only root, ServiceAccount berth, image %s): %+v %+v",
				p.Name, img, sc, ctr)
		}
	}
}

func (c *inCluster) berthPods() []corev1.Pod {
	c.t.Helper()
	l, err := c.k.Client.CoreV1().Pods(c.ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=berth"})
	if err != nil {
		c.t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range l.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out
}

// noForbidden fails the test if a Berth replica logged a request the Role
// did not allow.
func (c *inCluster) noForbidden() {
	c.t.Helper()
	for _, p := range c.berthPods() {
		if logs := c.logs(p.Name); strings.Contains(logs, "forbidden") {
			c.t.Errorf("Berth Pod %s was refused something by its Role:\n%s", p.Name, grepLines(logs, "forbidden"))
		}
	}
}

func (c *inCluster) logs(pod string) string {
	b, err := c.k.Client.CoreV1().Pods(c.ns).GetLogs(pod, &corev1.PodLogOptions{Container: "berth"}).DoRaw(context.Background())
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func (c *inCluster) dumpLogs() {
	for _, p := range c.berthPods() {
		c.t.Logf("log of %s:\n%s", p.Name, c.logs(p.Name))
	}
}

// registryRelay relays connections from the node's address on the Pod
// network (where Pods reach the node: the API server's endpoint) to the
// cluster's registry on loopback, until the test ends; it returns the
// relay's address.
func registryRelay(t *testing.T, k *kubetest.Kube) string {
	t.Helper()
	ep, err := k.Client.CoreV1().Endpoints("default").Get(context.Background(), "kubernetes", metav1.GetOptions{})
	if err != nil || len(ep.Subsets) == 0 || len(ep.Subsets[0].Addresses) == 0 {
		t.Fatalf("the node's address on the Pod network (the API server's endpoint): %v", err)
	}
	return startRelay(t, net.JoinHostPort(ep.Subsets[0].Addresses[0].IP, "0"), k.Registry)
}

// loopbackRelay relays connections to a loopback port to target and
// returns the port's address.
func loopbackRelay(t *testing.T, target string) string {
	t.Helper()
	return startRelay(t, "127.0.0.1:0", target)
}

// startRelay relays connections to listen to target until the test ends.
func startRelay(t *testing.T, listen, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go relay(conn, target)
		}
	}()
	return ln.Addr().String()
}

func relay(conn net.Conn, target string) {
	defer conn.Close()
	up, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	go func() { _, _ = io.Copy(up, conn); _ = up.(*net.TCPConn).CloseWrite() }()
	_, _ = io.Copy(conn, up)
}

// cli runs the berth CLI against the in-cluster control API (--server,
// --token) and returns its output.
func (c *inCluster) cli(args ...string) string {
	c.t.Helper()
	out, err := c.try(args...)
	if err != nil {
		c.t.Fatalf("berth %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// try runs the berth CLI against the in-cluster control API; the error
// carries its stderr.
func (c *inCluster) try(args ...string) (string, error) {
	cmd := exec.Command(c.bin, append(args, "--server", c.admin, "--token", c.token)...)
	cmd.Env = append(os.Environ(), "BERTH_DATA_DIR="+c.t.TempDir())
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		err = fmt.Errorf("%v: %s", err, ee.Stderr)
	}
	return string(out), err
}

// waitReady waits until the app shows n ready replicas (at least: another
// Berth replica may run its own until app replicas are shared); an app
// applied with kubectl may take a moment to reach the replica asked.
func (c *inCluster) waitReady(name string, n int) {
	c.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var v controlplane.AppView
		out, err := c.try("app", "show", name, "-o", "json")
		if err == nil {
			err = json.Unmarshal([]byte(out), &v)
		}
		ready := 0
		for _, r := range v.Replicas {
			if r.Ready {
				ready++
			}
		}
		if ready >= n {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("app %s: want %d ready replicas, have %+v (%v)", name, n, v.Replicas, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// applyApp creates an App with kubectl apply: one revision of image ref,
// every setting spelled out (a revision applied without concurrency made
// every replica divide by zero: see the report of h-incluster).
func (c *inCluster) applyApp(name, ref string) {
	c.t.Helper()
	c.k.Kubectl(c.t, fmt.Sprintf(`
apiVersion: berth.dev/v1
kind: App
metadata: {name: %s, namespace: %s}
spec:
  revisions:
    - name: %s--1
      config:
        source: {image: %q}
        transport: http
        port: 8080
        path: /mcp
        minReplicas: 1
        maxReplicas: 1
        concurrency: 10
        scaleDownAfterSeconds: 300
        memoryBytes: 268435456
        diskBytes: 1073741824
        cpu: 1
        egress: disabled
        probe: {type: tcp}
  traffic: [{revision: %s--1, percent: 100}]
  latestRevision: true
  nextRevision: 2
`, name, c.ns, name, ref, name), "apply", "-f", "-")
}
