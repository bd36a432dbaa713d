package kubetest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/internal/staticimage"
)

// Push pushes img to the cluster's registry as repoTag ("berth-test/x:1")
// and returns the reference Pods should use (registry/repo@digest).
func (k *Kube) Push(t testing.TB, img v1.Image, repoTag string) string {
	t.Helper()
	ref := k.Registry + "/" + repoTag
	d, err := staticimage.Push(context.Background(), img, ref)
	if err != nil {
		t.Fatal(err)
	}
	repo := ref
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		repo = ref[:i]
	}
	return repo + "@" + d.String()
}

var built struct {
	sync.Mutex
	refs map[string]string // package path -> pushed reference
}

// StaticImage builds the main package pkg of this module (for example
// "./internal/kubetest/kubeprobe") as a static binary, puts it as /app on
// an empty base with entrypoint /app, pushes it and returns its reference.
// Built once per test binary.
func (k *Kube) StaticImage(t testing.TB, pkg string) string {
	t.Helper()
	built.Lock()
	defer built.Unlock()
	if ref, ok := built.refs[pkg]; ok {
		return ref
	}
	bin := buildStatic(t, pkg)
	img, err := staticimage.Build(staticimage.Options{
		Files: []staticimage.File{{Path: "/app", Source: bin}}, Entrypoint: []string{"/app"}})
	if err != nil {
		t.Fatal(err)
	}
	ref := k.Push(t, img, "berth-test/"+filepath.Base(pkg)+":latest")
	if built.refs == nil {
		built.refs = map[string]string{}
	}
	built.refs[pkg] = ref
	return ref
}

// ProbeImage is the image of kubeprobe: `serve ADDR` or `dial ADDR...`.
func (k *Kube) ProbeImage(t testing.TB) string {
	return k.StaticImage(t, "./internal/kubetest/kubeprobe")
}

// BerthImage is Berth's own image (/berth and /berth-agent on an empty
// base): the one up.sh
// pushed, or, when the environment names none, one built from this tree.
func (k *Kube) BerthImage(t testing.TB) string {
	t.Helper()
	if k.Env.BerthImage != "" {
		return k.Env.BerthImage
	}
	return k.TreeBerthImage(t)
}

// TreeBerthImage is Berth's own image built from this tree and pushed
// (once per test binary), whatever the environment names: for tests of the
// code that runs in it, which an image pushed when a still running cluster
// started may lack.
func (k *Kube) TreeBerthImage(t testing.TB) string {
	t.Helper()
	built.Lock()
	defer built.Unlock()
	if ref, ok := built.refs["berth"]; ok {
		return ref
	}
	bin, agentBin := buildStatic(t, "./cmd/berth"), buildStatic(t, "./cmd/berth-agent")
	img, err := staticimage.Build(staticimage.Options{
		Files:      []staticimage.File{{Path: "/berth", Source: bin}, {Path: "/berth-agent", Source: agentBin}},
		Entrypoint: []string{"/berth"}})
	if err != nil {
		t.Fatal(err)
	}
	ref := k.Push(t, img, "berth:test")
	if built.refs == nil {
		built.refs = map[string]string{}
	}
	built.refs["berth"] = ref
	return ref
}

// buildStatic builds a main package of this module with CGO_ENABLED=0.
func buildStatic(t testing.TB, pkg string) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

func moduleRoot() (string, error) {
	b, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	gomod := strings.TrimSpace(string(b))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside the Berth module")
	}
	return filepath.Dir(gomod), nil
}
