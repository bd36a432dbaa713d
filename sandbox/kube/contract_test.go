package kube_test

import (
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/kube"
)

func agentCommand(argv []string) agent.ExecRequest {
	return agent.ExecRequest{Language: agent.Command, Argv: argv, TimeoutMillis: 60_000}
}

// TestContract: a sandbox Pod runs code through its agent (state, files,
// Python, a port), as the owner's labels say, as uid 1000, and Destroy
// removes the Pod, its Secret and its NetworkPolicy.
func TestContract(t *testing.T) {
	for _, c := range classes {
		t.Run(c.name, func(t *testing.T) {
			rt := newRuntime(t, c.rc, nil)
			t0 := time.Now()
			defer func() { t.Logf("%s: %v", c.name, time.Since(t0)) }()
			sb := start(t, rt, sandbox.Spec{ID: "contract", Owner: sandbox.Owner{Kind: "pool", Name: "p1"},
				Limits: sandbox.Limits{MemoryBytes: 256 << 20, CPU: 0.5, DiskBytes: 256 << 20}})
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			t.Logf("started in %v", time.Since(t0))
			checkPod(t, rt, sb, c.rc)
			if got := shell(t, sb, "cd /tmp && X=42 && id -u && id -g"); got != "1000\n1000" {
				t.Errorf("id: %q", got)
			}
			if got := shell(t, sb, "pwd; echo $X"); got != "/tmp\n42" {
				t.Errorf("shell state: %q", got)
			}
			if c.rc == "gvisor" {
				if got := shell(t, sb, "uname -r"); !strings.Contains(got, "gvisor") {
					t.Errorf("not under gVisor: uname -r %q", got)
				}
			}
			py := sandboxtestExec(t, sb, agent.ExecRequest{Language: agent.Python, Code: "y = 6 * 7\ny"})
			if string(py.Value) != "42" {
				t.Errorf("python: %+v", py)
			}
			if _, err := sb.Agent().Write(ctx, "dir/f.txt", strings.NewReader("content")); err != nil {
				t.Fatal(err)
			}
			if got := shell(t, sb, "cat /mnt/data/dir/f.txt; echo; stat -c %u /mnt/data/dir/f.txt"); got != "content\n1000" {
				t.Errorf("file: %q", got)
			}
			t.Logf("checks done at %v", time.Since(t0))
			checkPort(t, sb)
			t.Logf("port done at %v", time.Since(t0))
			destroyAndCheckGone(t, sb)
		})
	}
}

func sandboxtestExec(t *testing.T, sb sandbox.Sandbox, req agent.ExecRequest) *agent.Output {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := sb.Agent().Exec(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkPod checks the Pod's labels, runtime class, resources and the
// absence of a service account token.
func checkPod(t *testing.T, rt *kube.Runtime, sb sandbox.Sandbox, rc string) {
	t.Helper()
	p, err := cluster.cs.CoreV1().Pods(cluster.ns).Get(context.Background(), "berth-"+sb.ID(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l := p.Labels
	if l[kube.LabelManagedBy] != "berth" || l[kube.LabelSandbox] != sb.ID() || l[kube.LabelOwnerKind] != "pool" || l[kube.LabelOwnerName] != "p1" {
		t.Errorf("labels %v", l)
	}
	if got := p.Spec.RuntimeClassName; (rc == "") != (got == nil) || got != nil && *got != rc {
		t.Errorf("runtime class %v, want %q", got, rc)
	}
	if p.Spec.AutomountServiceAccountToken == nil || *p.Spec.AutomountServiceAccountToken {
		t.Error("the Pod mounts a service account token")
	}
	res := p.Spec.Containers[0].Resources
	if res.Limits.Memory().Value() != 256<<20 || res.Limits.Cpu().MilliValue() != 500 || res.Limits.StorageEphemeral().Value() != 256<<20 {
		t.Errorf("limits %v", res.Limits)
	}
	if got := shell(t, sb, "ls /var/run/secrets/kubernetes.io 2>&1; env | grep -c KUBERNETES_"); !strings.Contains(got, "No such file") {
		t.Errorf("service account or service links visible: %q", got)
	}
}

// checkPort serves HTTP on a port inside the sandbox and reaches it
// through the agent (DialPort relays over TCP).
func checkPort(t *testing.T, sb sandbox.Sandbox) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := sb.Agent().StartService(ctx, agent.ServiceSpec{ID: "web",
		Command: `exec python3 -m http.server --bind 127.0.0.1 8000 --directory /mnt/data`})
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return sb.Agent().DialPort(ctx, 8000)
	}}}
	for i := 0; ; i++ {
		resp, err := hc.Get("http://sandbox/dir/f.txt")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "content" {
				t.Fatalf("through the port: %q", b)
			}
			return
		}
		if i > 100 {
			t.Fatalf("the port never answered: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// destroyAndCheckGone destroys sb and checks that its objects are gone
// and Done is closed.
func destroyAndCheckGone(t *testing.T, sb sandbox.Sandbox) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := sb.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sb.Done():
	default:
		t.Error("Done is open after Destroy")
	}
	name := "berth-" + sb.ID()
	ns := cluster.ns
	_, e1 := cluster.cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	_, e2 := cluster.cs.CoreV1().Secrets(ns).Get(ctx, name+"-agent", metav1.GetOptions{})
	_, e3 := cluster.cs.NetworkingV1().NetworkPolicies(ns).Get(ctx, name, metav1.GetOptions{})
	for _, err := range []error{e1, e2, e3} {
		if !apierrors.IsNotFound(err) {
			t.Errorf("left after Destroy: %v", err)
		}
	}
	if err := sb.Agent().Ping(ctx); err == nil {
		t.Error("the agent answers after Destroy")
	}
}

// TestDiesAndCleanup: a Pod deleted behind the driver's back closes
// Done; Cleanup of a second runtime of the same instance (a restarted
// Berth) removes what the first left, and leaves other instances alone.
func TestDiesAndCleanup(t *testing.T) {
	rt := newRuntime(t, "", nil)
	other := newRuntime(t, "", nil)
	a := start(t, rt, sandbox.Spec{ID: "dies"})
	b := start(t, rt, sandbox.Spec{ID: "left"})
	keep := start(t, other, sandbox.Spec{ID: "keep"})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := cluster.cs.CoreV1().Pods(cluster.ns).Delete(ctx, "berth-"+a.ID(), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Done():
	case <-ctx.Done():
		t.Fatal("Done stayed open after the Pod was deleted")
	}
	// A second runtime on the same instance, as a restarted Berth.
	again, err := kube.New(ctx, rt.Options())
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if err := again.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"berth-" + b.ID(), "berth-" + b.ID() + "-agent"} {
		_, e1 := cluster.cs.CoreV1().Pods(cluster.ns).Get(ctx, n, metav1.GetOptions{})
		_, e2 := cluster.cs.CoreV1().Secrets(cluster.ns).Get(ctx, n, metav1.GetOptions{})
		if !apierrors.IsNotFound(e1) && !strings.HasSuffix(n, "-agent") || strings.HasSuffix(n, "-agent") && !apierrors.IsNotFound(e2) {
			t.Errorf("%s left after Cleanup: %v %v", n, e1, e2)
		}
	}
	if got := shell(t, keep, "echo alive"); got != "alive" {
		t.Errorf("another instance's sandbox: %q", got)
	}
}

// TestStartFailsClearly: an image that does not exist fails Start with
// the reason, quickly, and leaves nothing behind.
func TestStartFailsClearly(t *testing.T) {
	rt := newRuntime(t, "", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	id := "noimage-" + strings.ToLower(rand.Text()[:6])
	_, err := rt.Start(ctx, sandbox.Spec{ID: id, Image: cluster.image[:strings.Index(cluster.image, "@")] + ":does-not-exist"})
	if err == nil || !strings.Contains(err.Error(), "ErrImagePull") && !strings.Contains(err.Error(), "ImagePullBackOff") {
		t.Fatalf("start: %v", err)
	}
	if _, err := cluster.cs.CoreV1().Pods(cluster.ns).Get(ctx, "berth-"+id, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("Pod left: %v", err)
	}
	_, err = rt.Start(ctx, sandbox.Spec{ID: "Bad_ID"})
	if err == nil {
		t.Error("a bad id was accepted")
	}
}
