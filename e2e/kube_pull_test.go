package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/internal/imagetest"
	"github.com/berth-dev/berth/internal/kubeapitest"
	"github.com/berth-dev/berth/internal/kubetest"
	"github.com/berth-dev/berth/internal/registrytest"
	"github.com/berth-dev/berth/sandbox/sandboxtest"
)

// TestKubePullLogins: on the kube driver the kubelet pulls the sandboxes'
// images itself, from registries that want a login (on the node's
// loopback), with the login Berth holds: an app's own (berth app deploy
// --registry-*) for its replicas' Pods, the server's (berth registry
// login) for a pool's warm Pods. Each Pod names a dockerconfigjson Secret
// of its own in imagePullSecrets; the Secrets go with the app and the pool.
func TestKubePullLogins(t *testing.T) {
	k := kubetest.Cluster(t)
	ctx := context.Background()
	if err := (&kubeapitest.Server{Config: k.Config}).ApplyCRDs(ctx, "../deploy/kubernetes/crds"); err != nil {
		t.Fatal(err)
	}
	ns := k.Namespace(t, "h-kcreds")
	// No default pool: this test makes its own.
	if _, err := k.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "berth-meta"},
		Data: map[string]string{"defaultPoolCreated": "test"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Two registries: the app's login is not the server's. Images with a
	// mark of this run, which no node has yet (the Pods pull if absent).
	appReg := registrytest.Start(t, registrytest.Options{User: "ada", Password: "app-pull-pass"})
	poolReg := registrytest.Start(t, registrytest.Options{User: "pam", Password: "pool-pull-pass"})
	mark := "MARK=" + rand.Text()
	echo, err := remote.Image(mustRef(t, k.StaticImage(t, "./e2e/testdata/echoapp")))
	if err != nil {
		t.Fatal(err)
	}
	echo = withEnv(t, echo, mark)
	appImage := appReg.Ref("private/echo@" + imagetest.Push(t, appReg.Ref("private/echo:1"), echo, imagetest.BasicAuth("ada", "app-pull-pass")).String())
	debian := imagetest.Image(t, v1.Config{Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin", mark}}, sandboxtest.DebianLayer(t))
	poolImage := poolReg.Ref("private/debian:1")
	imagetest.Push(t, poolImage, debian, imagetest.BasicAuth("pam", "pool-pull-pass"))

	b := startBerth(t, "", "--state", "kube", "--runtime", "kube", "--kubeconfig", k.Env.Kubeconfig, "--kube-namespace", ns,
		"--kube-agent-image", k.BerthImage(t), "--runtime-class=", "--kube-agent-from", kubePodGW+"/32",
		"--insecure-registry", k.Env.Registry, "--insecure-registry", appReg.Host, "--insecure-registry", poolReg.Host)

	// 1. An app with its own login.
	start := time.Now()
	if _, errOut, code := b.cliStdin("app-pull-pass\n", "app", "deploy", "pulled", "--image", appImage, "--min", "1", "--max", "1",
		"--registry-server", appReg.Host, "--registry-username", "ada", "--registry-password-stdin"); code != 0 {
		t.Fatalf("deploy: exit %d: %s", code, errOut)
	}
	appPod := waitPulled(t, k, ns, "app", "pulled")
	t.Logf("app deployed → its Pod pulled (the app's login) and started: %v", time.Since(start).Round(time.Millisecond))
	b.waitReplicas("pulled", 1)
	checkPullSecret(t, k, ns, appPod, appReg.Host, "ada")
	t.Logf("the kubelet: %s", pulledEvent(t, k, ns, appPod.Name))
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: b.info.PublicURL + "/apps/pulled/mcp", MaxRetries: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "getenv", Arguments: map[string]any{"name": "MARK"}})
	if err != nil || len(res.Content) != 1 || "MARK="+res.Content[0].(*mcp.TextContent).Text != mark {
		t.Fatalf("getenv MARK in the app: %+v %v, want %s", res, err, mark)
	}
	_ = cs.Close()

	// 2. A pool's image, with the server's login.
	if _, errOut, code := b.cliStdin("pool-pull-pass\n", "registry", "login", poolReg.Host, "-u", "pam", "--password-stdin"); code != 0 {
		t.Fatalf("registry login: exit %d: %s", code, errOut)
	}
	start = time.Now()
	key := b.createPool("pulls", "--type", "shell", "--image", poolImage, "--ready", "1", "--max", "2")
	poolPod := waitPulled(t, k, ns, "pool", "pulls")
	t.Logf("pool created → its warm Pod pulled (the server's login) and started: %v", time.Since(start).Round(time.Millisecond))
	checkPullSecret(t, k, ns, poolPod, poolReg.Host, "pam")
	t.Logf("the kubelet: %s", pulledEvent(t, k, ns, poolPod.Name))
	if out := b.execute("pulls", key, "sess-1", "echo pulled").Stdout; out != "pulled\n" {
		t.Fatalf("shell in the pool's Pod: %q", out)
	}

	// Nothing is left once the app and the pool are gone.
	b.cli("app", "delete", "pulled")
	b.cli("pool", "delete", "pulls")
	var left []string
	deadline := time.Now().Add(30 * time.Second)
	for {
		l, err := k.Client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{FieldSelector: "type=" + string(corev1.SecretTypeDockerConfigJson)})
		if err != nil {
			t.Fatal(err)
		}
		left = left[:0]
		for _, s := range l.Items {
			left = append(left, s.Name)
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			pods, _ := k.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			t.Fatalf("pull Secrets left after the app and the pool were deleted: %v (Pods: %v)", left, podNames(pods.Items))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func mustRef(t *testing.T, ref string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// withEnv is img with env added to its configuration.
func withEnv(t *testing.T, img v1.Image, env string) v1.Image {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg := cf.Config
	cfg.Env = append(append([]string(nil), cfg.Env...), env)
	out, err := mutate.Config(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// waitPulled waits until a Pod of the owner (kind app or pool) runs with
// all its containers ready, and returns it; a Pod whose image the kubelet
// cannot pull fails the test at once, with the kubelet's reason.
func waitPulled(t *testing.T, k *kubetest.Kube, ns, kind, owner string) *corev1.Pod {
	t.Helper()
	var up *corev1.Pod
	waitUntil(t, "a running Pod of "+kind+" "+owner, func() bool {
		l, err := k.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{
			LabelSelector: "berth.dev/owner-kind=" + kind + ",berth.dev/owner-name=" + owner})
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range l.Items {
			if msg := pullFailure(&p); msg != "" {
				t.Fatalf("%s %s: Pod %s: %s", kind, owner, p.Name, msg)
			}
			if p.Status.Phase == corev1.PodRunning && ready(&p) {
				up = &l.Items[i]
			}
		}
		if up == nil {
			noFailedPull(t, k, ns)
		}
		return up != nil
	})
	return up
}

// pullFailure is the kubelet's reason for not pulling a container's image
// ("" if none).
func pullFailure(p *corev1.Pod) string {
	for _, c := range append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		if w := c.State.Waiting; w != nil && (w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff") {
			return fmt.Sprintf("container %s: %s: %s", c.Name, w.Reason, w.Message)
		}
	}
	return ""
}

// noFailedPull fails the test if the namespace's events say an image pull
// failed (of a Pod the driver may have deleted since).
func noFailedPull(t *testing.T, k *kubetest.Kube, ns string) {
	t.Helper()
	l, err := k.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "reason=Failed"})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range l.Items {
		if strings.Contains(e.Message, "pull") {
			t.Fatalf("Pod %s: %s", e.InvolvedObject.Name, e.Message)
		}
	}
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// checkPullSecret checks that the Pod pulls with a dockerconfigjson
// Secret of its own that holds user's login for host.
func checkPullSecret(t *testing.T, k *kubetest.Kube, ns string, p *corev1.Pod, host, user string) {
	t.Helper()
	if len(p.Spec.ImagePullSecrets) != 1 || p.Spec.ImagePullSecrets[0].Name != p.Name+"-pull" {
		t.Fatalf("Pod %s: imagePullSecrets %v, want [%s-pull]", p.Name, p.Spec.ImagePullSecrets, p.Name)
	}
	s, err := k.Client.CoreV1().Secrets(ns).Get(context.Background(), p.Spec.ImagePullSecrets[0].Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(s.Data[corev1.DockerConfigJsonKey])
	if s.Type != corev1.SecretTypeDockerConfigJson || !strings.Contains(cfg, `"`+host+`"`) || !strings.Contains(cfg, `"username":"`+user+`"`) {
		t.Fatalf("Secret %s: type %s, %d bytes: want %s's login for %s", s.Name, s.Type, len(cfg), user, host)
	}
}

// pulledEvent is what the kubelet said when it pulled the image of the
// Pod's main container (how long it took).
func pulledEvent(t *testing.T, k *kubetest.Kube, ns, pod string) string {
	t.Helper()
	var msg string
	waitUntil(t, "the kubelet's Pulled event of "+pod, func() bool {
		l, err := k.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{
			FieldSelector: "reason=Pulled,involvedObject.name=" + pod})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range l.Items {
			if e.InvolvedObject.FieldPath == "spec.containers{sandbox}" {
				msg = e.Message
			}
		}
		return msg != ""
	})
	return msg
}
