package kube_test

import (
	"context"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/internal/imagetest"
	"github.com/berth-dev/berth/internal/registrytest"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/kube"
	"github.com/berth-dev/berth/sandbox/sandboxtest"
)

// logins is Options.Credentials of a test: one login per host.
type logins map[string]sandbox.RegistryLogin

func (l logins) RegistryCredential(_ context.Context, host string) (string, string, bool, error) {
	c, ok := l[host]
	return c.User, c.Password, ok, nil
}

// TestPullSecret: a sandbox's image from a registry that wants a login
// (a registry on the node's loopback with basic auth) is pulled with the
// Spec's login or, without one, the driver's Credentials, through a pull
// Secret of the sandbox's own that goes with it; without a login the
// pull is refused and Start says so.
func TestPullSecret(t *testing.T) {
	setup(t)
	reg := registrytest.Start(t, registrytest.Options{User: "dora", Password: "pull-pass"})
	login := &sandbox.RegistryLogin{User: "dora", Password: "pull-pass"}
	// Images of their own (no node has them yet), on the test's Debian layer.
	push := func(tag string) string {
		img := imagetest.Image(t, v1.Config{Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin", "MARK=" + tag + rand.Text()}}, sandboxtest.DebianLayer(t))
		return reg.Host + "/private/debian@" + imagetest.Push(t, reg.Ref("private/debian:"+tag), img, imagetest.BasicAuth(login.User, login.Password)).String()
	}
	ref, ref2 := push("spec"), push("creds")
	rt := newRuntime(t, "", nil)

	// A wrong login (and none): the kubelet is refused, and Start says so.
	for _, l := range []*sandbox.RegistryLogin{nil, {User: "dora", Password: "wrong"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		_, err := rt.Start(ctx, sandbox.Spec{ID: "nopull-" + strings.ToLower(rand.Text()[:6]), Image: ref, PullAuth: l})
		cancel()
		if err == nil || !strings.Contains(err.Error(), "ErrImagePull") && !strings.Contains(err.Error(), "ImagePullBackOff") {
			t.Fatalf("login %v: Start: %v, want an image pull error", l, err)
		}
	}

	sb := start(t, rt, sandbox.Spec{ID: "pull", Image: ref, PullAuth: login})
	if got := shell(t, sb, "echo pulled"); got != "pulled" {
		t.Fatalf("exec: %q", got)
	}
	secret := "berth-" + sb.ID() + "-pull"
	p, err := cluster.cs.CoreV1().Pods(cluster.ns).Get(context.Background(), "berth-"+sb.ID(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Spec.ImagePullSecrets) != 1 || p.Spec.ImagePullSecrets[0].Name != secret {
		t.Errorf("imagePullSecrets %v", p.Spec.ImagePullSecrets)
	}
	if err := sb.Destroy(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.cs.CoreV1().Secrets(cluster.ns).Get(context.Background(), secret, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the pull Secret outlived its sandbox: %v", err)
	}

	// The driver's own logins, by registry host.
	withCreds := newRuntime(t, "", func(o *kube.Options) { o.Credentials = logins{reg.Host: *login} })
	if got := shell(t, start(t, withCreds, sandbox.Spec{ID: "creds", Image: ref2}), "echo pulled"); got != "pulled" {
		t.Fatalf("exec: %q", got)
	}
}
