package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/internal/imagetest"
	"github.com/berth-dev/berth/internal/registrytest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestImageCLI logs in to a registry on loopback that wants basic auth,
// pulls, lists and prunes an image through berth up's control API.
func TestImageCLI(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{User: "alice", Password: "image-e2e-pass"})
	img := imagetest.Image(t, v1.Config{Entrypoint: []string{"/bin/app"}, ExposedPorts: map[string]struct{}{"8080/tcp": {}}},
		imagetest.Layer(t, imagetest.File("bin/app", "app")), imagetest.Layer(t, imagetest.File("data", strings.Repeat("d", 200_000))))
	digest := imagetest.Push(t, reg.Ref("e2e/app:1"), img, imagetest.BasicAuth("alice", "image-e2e-pass"))
	dataDir := t.TempDir()
	b := startBerth(t, dataDir, "--insecure-registry", reg.Host)

	withStdin := func(stdin string, args ...string) (string, string, int) {
		cmd := exec.Command(b.bin, args...)
		cmd.Env = append(os.Environ(), "BERTH_DATA_DIR="+b.dataDir)
		cmd.Stdin = strings.NewReader(stdin)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return out.String(), errOut.String(), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), errOut.String(), 0
	}

	if _, errOut, code := b.try("image", "pull", reg.Ref("e2e/app:1")); code != 1 || !strings.Contains(errOut, "UNAUTHORIZED") {
		t.Fatalf("anonymous pull: exit %d: %s", code, errOut)
	}
	if _, errOut, code := withStdin("wrong\n", "registry", "login", reg.Host, "-u", "alice", "--password-stdin"); code != 0 {
		t.Fatalf("login: %s", errOut)
	}
	if _, errOut, code := b.try("image", "pull", reg.Ref("e2e/app:1")); code != 1 || !strings.Contains(errOut, "UNAUTHORIZED") {
		t.Fatalf("pull with a wrong password: exit %d: %s", code, errOut)
	}
	if out, errOut, code := withStdin("image-e2e-pass\n", "registry", "login", reg.Host, "-u", "alice", "--password-stdin"); code != 0 || !strings.Contains(out, reg.Host) {
		t.Fatalf("login: %s %s", out, errOut)
	}
	out := b.cli("image", "pull", reg.Ref("e2e/app:1"))
	if !strings.Contains(out, digest.String()) || !strings.Contains(out, ": downloaded") || !strings.Contains(out, ": unpacked") {
		t.Fatalf("pull output:\n%s", out)
	}
	if out := b.cli("registry", "list"); !strings.Contains(out, reg.Host) || !strings.Contains(out, "alice") || strings.Contains(out, "image-e2e-pass") {
		t.Fatalf("registry list:\n%s", out)
	}
	var list []image.Image
	b.cliJSON(&list, "image", "list")
	if len(list) != 1 || list[0].Digest != digest.String() || list[0].Size < 200_000 || list[0].Config.ExposedPorts[0] != 8080 {
		t.Fatalf("image list: %+v", list)
	}
	if out := b.cli("image", "list"); !strings.Contains(out, reg.Ref("e2e/app:1")) {
		t.Fatalf("image list:\n%s", out)
	}
	if _, err := os.Stat(list[0].RootFS); err != nil || !strings.HasPrefix(list[0].RootFS, dataDir) {
		t.Fatalf("root %s: %v", list[0].RootFS, err)
	}
	for _, f := range []string{"berth.db", "berth.db-wal"} {
		if raw, _ := os.ReadFile(filepath.Join(dataDir, f)); bytes.Contains(raw, []byte("image-e2e-pass")) {
			t.Fatalf("%s holds the registry password in clear", f)
		}
	}
	if out := b.cli("image", "prune"); !strings.HasPrefix(out, "freed ") || strings.HasPrefix(out, "freed 0") {
		t.Fatalf("prune: %s", out)
	}
	b.cliJSON(&list, "image", "list")
	if len(list) != 0 {
		t.Fatalf("after prune: %+v", list)
	}
	if ents, _ := os.ReadDir(filepath.Join(dataDir, "images/blobs/sha256")); len(ents) != 0 {
		t.Fatalf("blobs left after prune: %d", len(ents))
	}
	b.cli("registry", "logout", reg.Host)
	if out := b.cli("registry", "list"); strings.Contains(out, reg.Host) {
		t.Fatalf("after logout:\n%s", out)
	}
	if _, errOut, code := b.try("registry", "logout", reg.Host); code != 1 || !strings.Contains(errOut, "no login stored") {
		t.Fatalf("second logout: %d %s", code, errOut)
	}
}
