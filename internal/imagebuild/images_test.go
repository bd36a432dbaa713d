package imagebuild_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"github.com/berth-dev/berth/internal/imagebuild"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/berth-dev/berth/internal/testutil"
)

// The built-in images are built by scripts/images.sh (which make test
// runs through scripts/setup.sh); these tests unpack one and run its
// programs under bubblewrap, read-only, as an unprivileged user.

// builtImage returns a built-in image's config and its rootfs, unpacked
// into a fresh directory; it skips the test if the image is not built.
func builtImage(t *testing.T, name string) (*v1.ConfigFile, string) {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "bwrap")
	testutil.RequireTool(t, "setpriv")
	dir := filepath.Join(imagebuild.CacheDir(), name)
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
		t.Skipf("SKIP: the built-in image %q is not built (%s): run scripts/images.sh "+
			"(make test builds it through scripts/setup.sh)", name, dir)
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) != 1 {
		t.Fatalf("%s: %v %+v", dir, err, im)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("%s: %d layers, %v", dir, len(layers), err)
	}
	d, _ := layers[0].Digest()
	if rootfs := unpacked[d]; rootfs != "" {
		return cf, rootfs
	}
	rootfs, err := os.MkdirTemp("", "berth-envimg-rootfs-")
	if err != nil {
		t.Fatal(err)
	}
	unpacked[d] = rootfs // removed by TestMain
	// The sandbox's user must reach it.
	if err := os.Chmod(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	blob := filepath.Join(dir, "blobs", d.Algorithm, d.Hex)
	start := time.Now()
	if out, err := exec.Command("tar", "-xzf", blob, "-C", rootfs, "--numeric-owner").CombinedOutput(); err != nil {
		t.Fatalf("unpack %s: %v %s", blob, err, out)
	}
	t.Logf("image %s: %s unpacked in %s", name, im.Manifests[0].Digest, time.Since(start).Round(time.Millisecond))
	return cf, rootfs
}

// unpacked holds the rootfs unpacked for each layer, shared by the tests.
var unpacked = map[v1.Hash]string{}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, dir := range unpacked {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// sandboxed returns a command that runs argv in rootfs as the image's
// environment would: the root read-only, a private /tmp, the image's Env
// and WorkingDir, uid 1000 inside and an unprivileged uid outside, no
// network. files are bound read-only into /tmp (name → host path).
func sandboxed(cf *v1.ConfigFile, rootfs string, files map[string]string, argv ...string) *exec.Cmd {
	args := []string{"--reuid", "65534", "--regid", "65534", "--clear-groups", "bwrap",
		"--unshare-all", "--die-with-parent", "--new-session",
		"--ro-bind", rootfs, "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
		"--uid", "1000", "--gid", "1000", "--chdir", cf.Config.WorkingDir, "--clearenv"}
	for name, host := range files {
		args = append(args, "--ro-bind", host, "/tmp/"+name)
	}
	for _, kv := range cf.Config.Env {
		k, v, _ := strings.Cut(kv, "=")
		args = append(args, "--setenv", k, v)
	}
	return exec.Command("setpriv", append(append(args, "--"), argv...)...)
}

func run(t *testing.T, cmd *exec.Cmd) (stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %v\nstdout: %s\nstderr: %s", cmd.Args[len(cmd.Args)-3:], err, o.String(), e.String())
	}
	return o.String(), e.String()
}

func checkConfig(t *testing.T, cf *v1.ConfigFile, env ...string) {
	t.Helper()
	if cf.OS != "linux" || cf.Architecture != "amd64" || cf.Config.User != "1000:1000" || cf.Config.WorkingDir != "/mnt/data" {
		t.Errorf("config: %s/%s user %q workdir %q", cf.OS, cf.Architecture, cf.Config.User, cf.Config.WorkingDir)
	}
	for _, kv := range append(env, "LANG=C.UTF-8", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin") {
		if !slices.Contains(cf.Config.Env, kv) {
			t.Errorf("Env lacks %s: %q", kv, cf.Config.Env)
		}
	}
}

const pythonCheck = `
import base64, io, sys
import numpy, pandas, matplotlib, scipy, scipy.integrate, sympy, requests, openpyxl, PIL.Image, sklearn, seaborn, bs4, lxml, yaml
import matplotlib.pyplot as plt
df = pandas.DataFrame({"x": numpy.arange(10), "y": numpy.arange(10) ** 2})
df.plot(x="x", y="y")
buf = io.BytesIO()
plt.savefig(buf, format="png")
wb = openpyxl.Workbook(); wb.active["A1"] = 1; wb.save("/tmp/a.xlsx")
x = sympy.Symbol("x")
print(matplotlib.get_backend(), round(scipy.integrate.quad(lambda v: v, 0, 1)[0], 3), sympy.integrate(x ** 2, x), PIL.Image.open(io.BytesIO(buf.getvalue())).size)
print(base64.b64encode(buf.getvalue()).decode())
`

func TestPythonImage(t *testing.T) {
	cf, rootfs := builtImage(t, "python")
	checkConfig(t, cf, "MPLBACKEND=Agg", "MPLCONFIGDIR=/tmp/matplotlib")
	start := time.Now()
	out, stderr := run(t, sandboxed(cf, rootfs, nil, "python3", "-c", pythonCheck))
	t.Logf("imports and a plot: %s", time.Since(start).Round(time.Millisecond))
	first, b64, _ := strings.Cut(out, "\n")
	if first != "agg 0.5 x**3/3 (640, 480)" {
		t.Errorf("first line %q", first)
	}
	if stderr != "" { // e.g. matplotlib complaining of an unwritable config dir
		t.Errorf("stderr: %s", stderr)
	}
	data, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
	if err != nil {
		t.Fatal(err)
	}
	if cfg, err := png.DecodeConfig(bytes.NewReader(data)); err != nil || cfg.Width != 640 {
		t.Fatalf("the plot is not a PNG: %v %+v", err, cfg)
	}
	// The image's user, and the root is read-only.
	out, _ = run(t, sandboxed(cf, rootfs, nil, "bash", "-c", `id -un; touch /usr/x 2>&1 || echo read-only`))
	if !strings.HasPrefix(out, "user\n") || !strings.Contains(out, "read-only") {
		t.Errorf("user and read-only root: %q", out)
	}
}

// TestPythonImageDriver runs Berth's Python driver (agent/pydriver.py) in
// the image: a figure comes back, quickly, thanks to the font list the
// image ships.
func TestPythonImageDriver(t *testing.T) {
	cf, rootfs := builtImage(t, "python")
	driver := filepath.Join(testutil.ModuleRoot(), "agent", "pydriver.py")
	cmd := sandboxed(cf, rootfs, map[string]string{"pydriver.py": driver}, "python3", "-u", "/tmp/pydriver.py")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.ExtraFiles = []*os.File{r} // the driver reads requests on fd 3
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	// The font list is seeded before matplotlib is used; then a plot.
	for _, code := range []string{"import os\nos.listdir(os.environ['MPLCONFIGDIR'])", "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3]); plt.show()"} {
		req, _ := json.Marshal(map[string]string{"nonce": "n", "code": code})
		_, _ = w.Write(append(req, '\n'))
	}
	start := time.Now()
	w.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("driver: %v %s", err, e.String())
	}
	t.Logf("python3 with the driver, first plot in a fresh sandbox: %s", time.Since(start).Round(time.Millisecond))
	parts := strings.Split(o.String(), "\x00berth-n:")
	if len(parts) != 3 {
		t.Fatalf("want two results: %q %q", o.String(), e.String())
	}
	var res [2]struct {
		ExitCode int
		Value    any
		Images   []struct{ Format, Data string }
	}
	for i := range res {
		payload, _, _ := strings.Cut(parts[i+1], "\x00")
		if err := json.Unmarshal([]byte(payload), &res[i]); err != nil || res[i].ExitCode != 0 {
			t.Fatalf("result %.300s: %v (stderr %q)", payload, err, e.String())
		}
	}
	if fmt.Sprint(res[0].Value) != "[fontlist-v330.json]" {
		t.Errorf("MPLCONFIGDIR before matplotlib: %v, want the image's font list", res[0].Value)
	}
	if len(res[1].Images) != 1 || res[1].Images[0].Format != "png" {
		t.Fatalf("plot: %+v", res[1])
	}
	if strings.Contains(e.String(), "Traceback") || strings.Contains(e.String(), "Matplotlib") {
		t.Errorf("stderr: %s", e.String())
	}
}

func TestShellImage(t *testing.T) {
	cf, rootfs := builtImage(t, "shell")
	checkConfig(t, cf)
	out, _ := run(t, sandboxed(cf, rootfs, nil, "bash", "-c",
		`set -e; for p in bash curl git jq python3 tar gzip ps; do command -v $p; done
		 echo '{"a":[1,2]}' | jq -c '.a'; git init -q /tmp/r && git -C /tmp/r status --short | wc -l
		 curl --version | head -1 | cut -d' ' -f1; python3 -c 'print(6*7)'; pwd; id -un`))
	for _, want := range []string{"/usr/bin/bash\n", "/usr/bin/curl\n", "/usr/bin/git\n", "/usr/bin/jq\n", "/usr/bin/python3\n",
		"[1,2]\n0\ncurl\n42\n/mnt/data\nuser\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
