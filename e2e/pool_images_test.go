package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/berth-dev/berth/controlplane"
	"github.com/berth-dev/berth/dataplane"
	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/internal/imagebuild"
	"github.com/berth-dev/berth/internal/imagetest"
	"github.com/berth-dev/berth/internal/registrytest"
	"github.com/berth-dev/berth/internal/testutil"
	"github.com/berth-dev/berth/mcpserver"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/sandboxtest"
)

// debianImage pushes the sandbox tests' cached Debian root (bash,
// python3) as an image, with a marker file that no host root has, and
// returns its reference and digest. The layer (owned by root, without
// /dev) is packed once by tar and gzip and cached next to the root.
func debianImage(t *testing.T, reg *registrytest.Registry, marker string) (string, string) {
	t.Helper()
	base := sandboxtest.DebianLayer(t)
	img := imagetest.Image(t, v1.Config{User: "app", Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin"}},
		base, imagetest.Layer(t, imagetest.File("etc/berth-marker", marker)))
	ref := reg.Ref("e2e/debian:1")
	return ref, imagetest.Push(t, ref, img).String()
}

// poolHostUIDs are the host uids of the processes of a pool's sandboxes
// (found by their cgroups, named POOL-HEX).
func poolHostUIDs(t *testing.T, pool string) map[uint32]bool {
	t.Helper()
	re := regexp.MustCompile("/" + pool + "-[0-9a-f]{10}$")
	uids := map[uint32]bool{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cg, err := os.ReadFile("/proc/" + e.Name() + "/cgroup")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(strings.TrimSpace(string(cg)), "\n") {
			if re.MatchString(line) {
				var st syscall.Stat_t
				if syscall.Stat("/proc/"+e.Name(), &st) == nil {
					uids[st.Uid] = true
				}
				break
			}
		}
	}
	return uids
}

// TestPoolOnImage runs code-interpreter pools on a Debian image pulled
// from a registry on loopback: a python pool (bwrap) and a shell pool
// (gVisor) with its MCP endpoint; an image without python3 is refused at
// create; updating a pool's image replaces its warm sandboxes.
func TestPoolOnImage(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	marker := "berth-image-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	ref, digest := debianImage(t, reg, marker)
	b := startBerth(t, "", "--insecure-registry", reg.Host)

	t.Run("python on bwrap", func(t *testing.T) {
		key := b.createPool("hpimgpy", "--type", "python", "--image", ref, "--ready", "1")
		var v controlplane.PoolView
		b.cliJSON(&v, "pool", "show", "hpimgpy")
		if v.Image != ref || v.ImageDigest != digest {
			t.Fatalf("pool show: image %q digest %q, want %q %q", v.Image, v.ImageDigest, ref, digest)
		}
		r := b.execute("hpimgpy", key, "py-one", "x = 41\nprint(open('/etc/berth-marker').read())")
		if r.Status != "Success" || r.Stdout != marker+"\n" {
			t.Fatalf("first execution: %+v", r)
		}
		if r := b.execute("hpimgpy", key, "py-one", "x + 1"); string(r.Result) != "42" {
			t.Fatalf("state: %+v", r)
		}
		if r := b.execute("hpimgpy", key, "py-two", "x"); r.Status == "Success" || !strings.Contains(r.Stderr, "NameError") {
			t.Fatalf("another identifier sees x: %+v", r)
		}
		if up := b.upload("hpimgpy", key, "py-one", "data.txt", strings.NewReader("from the files API")); up.Status != http.StatusOK {
			t.Fatalf("upload: %d %s", up.Status, up.Body)
		}
		if r := b.execute("hpimgpy", key, "py-one", "open('/mnt/data/data.txt').read()"); string(r.Result) != `"from the files API"` {
			t.Fatalf("uploaded file from python: %+v", r)
		}
		if got := b.do(http.MethodGet, "/pools/hpimgpy/files/content/data.txt?identifier=py-one", keyHeader(key), nil); string(got.Body) != "from the files API" {
			t.Fatalf("download: %d %s", got.Status, got.Body)
		}
		if r := b.execute("hpimgpy", key, "py-one", "import os\nos.getuid()"); string(r.Result) != "1000" {
			t.Fatalf("python runs as image uid %s, want the image user app (1000): %+v", r.Result, r)
		}
		uids := poolHostUIDs(t, "hpimgpy")
		if len(uids) == 0 {
			t.Fatal("no host process of the pool's sandboxes found")
		}
		for u := range uids {
			if u == 0 || u == 1000 || u >= sandbox.ImageIDShift {
				t.Fatalf("a process of the pool runs as host uid %d (all: %v)", u, uids)
			}
		}
	})

	t.Run("image without python3", func(t *testing.T) {
		noPy := reg.Ref("e2e/nopython:1")
		imagetest.Push(t, noPy, imagetest.GoImage(t, "package main\nfunc main() {}\n", v1.Config{}))
		_, errOut, code := b.try("pool", "create", "hpimgbad", "--type", "python", "--image", noPy)
		if code != 1 || !strings.Contains(errOut, "cannot run a python pool") || !strings.Contains(errOut, "python3") {
			t.Fatalf("create on an image without python3: exit %d: %s", code, errOut)
		}
		if _, _, code := b.try("pool", "show", "hpimgbad"); code == 0 {
			t.Fatal("the refused pool exists")
		}
	})

	t.Run("shell on gvisor, MCP, image update", func(t *testing.T) {
		key := b.createPool("hpimgsh", "--type", "shell", "--runtime", "gvisor", "--ready", "1", "--mcp")
		if r := b.execute("hpimgsh", key, "sh-host", "export A=1; cat /etc/berth-marker"); r.ExitCode == nil || *r.ExitCode == 0 {
			t.Fatalf("a host-root sandbox has the image's marker: %+v", r)
		}
		waitWarm(t, b, "hpimgsh", 1)
		b.cli("pool", "update", "hpimgsh", "--image", ref)
		// A new identifier gets a sandbox on the image, never a warm one
		// made before the update.
		if r := b.execute("hpimgsh", key, "sh-image", "cat /etc/berth-marker; export B=2"); r.Stdout != marker {
			t.Fatalf("after the update: %+v", r)
		}
		if r := b.execute("hpimgsh", key, "sh-image", "echo $B; id -un"); r.Stdout != "2\napp\n" {
			t.Fatalf("state on the image: %+v", r)
		}
		// The live session keeps its sandbox and state.
		if r := b.execute("hpimgsh", key, "sh-host", "echo $A"); r.Stdout != "1\n" {
			t.Fatalf("the live session lost its state: %+v", r)
		}
		c, err := dialMCP(t, b.mcpURL("hpimgsh"), key, false, "")
		if err != nil {
			t.Fatal(err)
		}
		env := c.launch()
		if out := c.sh(env, "cat /etc/berth-marker"); out.Stdout != marker {
			t.Fatalf("MCP shell on the image: %+v", out)
		}
	})
}

// counterServer is a custom container: a static Go HTTP server that
// counts its requests and says who it is and what it was sent.
const counterServer = `package main

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"
)

func main() {
	me := strconv.FormatInt(time.Now().UnixNano(), 36)
	var n atomic.Int64
	http.HandleFunc("/count", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, n.Add(1)) })
	http.HandleFunc("/mcp", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "the container's own /mcp") })
	http.HandleFunc("/whoami", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s path=%s query=%s key=%q auth=%q greeting=%s uid=%d", me, r.URL.Path, r.URL.RawQuery,
			r.Header.Get("X-Ms-Apikey"), r.Header.Get("Authorization"), os.Getenv("GREETING"), os.Getuid())
	})
	http.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < 3; i++ {
			fmt.Fprintf(w, "tick %d\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(200 * time.Millisecond)
		}
	})
	if err := http.ListenAndServe(":8080", nil); err != nil {
		panic(err)
	}
}
`

// TestCustomContainerPool runs a custom pool of a static Go server image:
// each identifier reaches a container of its own, with its own state;
// the key is required; the pool's max gives 429; cooldown removes them.
func TestCustomContainerPool(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	ref := reg.Ref("e2e/counter:1")
	imagetest.Push(t, ref, imagetest.GoImage(t, counterServer, v1.Config{User: "app"}))
	b := startBerth(t, "", "--insecure-registry", reg.Host)
	key := b.createPool("hpcustom", "--type", "custom", "--image", ref, "--target-port", "8080",
		"--ready", "1", "--max", "2", "--cooldown", "3s", "--env", "GREETING=hello")

	get := func(id, path string, h http.Header) resp {
		t.Helper()
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		return b.do(http.MethodGet, "/pools/hpcustom"+path+sep+"identifier="+id, h, nil)
	}
	body := func(id, path string) string {
		t.Helper()
		r := get(id, path, keyHeader(key))
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s as %s: %d %s", path, id, r.Status, r.Body)
		}
		return string(r.Body)
	}

	// A prune keeps the images pools run.
	b.cli("image", "prune")
	var list []image.Image
	b.cliJSON(&list, "image", "list")
	if len(list) != 1 || list[0].Digest != b.poolView("hpcustom").ImageDigest {
		t.Fatalf("images after a prune: %+v", list)
	}

	if r := get("alpha", "/count", nil); r.Status != http.StatusUnauthorized {
		t.Fatalf("without a key: %d %s", r.Status, r.Body)
	}
	if r := get("alpha", "/count", http.Header{"X-Ms-Apikey": {"wrong"}}); r.Status != http.StatusUnauthorized {
		t.Fatalf("with a wrong key: %d %s", r.Status, r.Body)
	}
	for i, want := range []string{"1", "2", "3"} {
		if got := body("alpha", "/count"); got != want {
			t.Fatalf("alpha's request %d: %q, want %q", i, got, want)
		}
	}
	if got := body("beta", "/count"); got != "1" {
		t.Fatalf("beta shares alpha's counter: %q", got)
	}
	alpha, beta := body("alpha", "/whoami?x=1"), body("beta", "/whoami")
	if strings.Fields(alpha)[0] == strings.Fields(beta)[0] {
		t.Fatalf("alpha and beta reach one container: %q %q", alpha, beta)
	}
	if !strings.Contains(alpha, `path=/whoami query=x=1 key="" auth="" greeting=hello`) {
		t.Fatalf("what the container was sent: %q", alpha)
	}
	if uid := alpha[strings.LastIndex(alpha, "uid=")+4:]; uid != "1000" {
		t.Fatalf("the container runs as image uid %s, want app (1000)", uid)
	}
	bearer := http.Header{"Authorization": {"Bearer " + key}}
	if r := get("alpha", "/whoami", bearer); r.Status != http.StatusOK || strings.Fields(string(r.Body))[0] != strings.Fields(alpha)[0] {
		t.Fatalf("alpha with a bearer key: %d %s", r.Status, r.Body)
	}
	if r := get("alpha", "/nothing", keyHeader(key)); r.Status != http.StatusNotFound {
		t.Fatalf("the container's own 404: %d %s", r.Status, r.Body)
	}
	start := time.Now()
	if got := body("alpha", "/stream"); got != "tick 0\ntick 1\ntick 2\n" || time.Since(start) < 400*time.Millisecond {
		t.Fatalf("stream: %q", got)
	}
	// /mcp is the container's too, behind the key.
	if r := get("alpha", "/mcp", nil); r.Status != http.StatusUnauthorized {
		t.Fatalf("/mcp without a key: %d %s", r.Status, r.Body)
	}
	if got := body("alpha", "/mcp"); got != "the container's own /mcp" {
		t.Fatalf("/mcp: %q", got)
	}
	if r := get("gamma", "/count", keyHeader(key)); r.Status != http.StatusTooManyRequests {
		t.Fatalf("a third identifier with --max 2: %d %s", r.Status, r.Body)
	}
	if r := b.do(http.MethodGet, "/pools/hpcustom/count", keyHeader(key), nil); r.Status != http.StatusBadRequest {
		t.Fatalf("no identifier: %d %s", r.Status, r.Body)
	}

	// Cooldown: idle sessions go, and with them their containers.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var v controlplane.PoolView
		b.cliJSON(&v, "pool", "show", "hpcustom")
		if v.Status.Sessions == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sessions left after the cooldown: %+v", v.Status)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := body("alpha", "/count"); got != "1" {
		t.Fatalf("alpha after its cooldown: %q, want a new container", got)
	}
	b.waitLog("session ended", "hpcustom", "idle past cooldown")
	var v controlplane.PoolView
	b.cliJSON(&v, "pool", "show", "hpcustom")
	raw, _ := json.Marshal(v)
	if v.Container == nil || v.Container.TargetPort != 8080 || v.ImageDigest == "" {
		t.Fatalf("pool show: %s", raw)
	}

	// Under gVisor, and declared in a manifest (berth apply).
	manifest := filepath.Join(t.TempDir(), "pool.yaml")
	yml := `type: Microsoft.App/sessionPools
name: hpcustomg
properties:
  containerType: CustomContainer
  runtime: gvisor
  scaleConfiguration: {maxConcurrentSessions: 5, readySessionInstances: 1}
  customContainerTemplate:
    containers:
      - image: ` + ref + `
        env: [{name: GREETING, value: from-yaml}]
        resources: {cpu: 0.5, memory: 256Mi}
    ingress: {targetPort: 8080}
`
	if err := os.WriteFile(manifest, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	b.cli("apply", "-f", manifest)
	if v := b.poolView("hpcustomg"); v.Runtime != "gvisor" || v.Max != 5 || v.CPU != 0.5 {
		t.Fatalf("the applied pool: %+v", v.Config)
	}
	gKey := strings.TrimSpace(b.cli("pool", "credentials", "hpcustomg"))
	gGet := func(id, path string) string {
		t.Helper()
		r := b.do(http.MethodGet, "/pools/hpcustomg"+path+"?identifier="+id, keyHeader(gKey), nil)
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s as %s: %d %s", path, id, r.Status, r.Body)
		}
		return string(r.Body)
	}
	if a, c := gGet("one1", "/whoami"), gGet("two2", "/whoami"); strings.Fields(a)[0] == strings.Fields(c)[0] || !strings.Contains(a, "greeting=from-yaml") {
		t.Fatalf("the applied pool: %q %q", a, c)
	}
}

// TestDefaultPoolsOnBuiltinImages starts berth up as `make up` does: the
// default pool runs on the built-in shell image, and the example python
// pool (berth apply of a session pool manifest) on the built-in Python
// image, with its data stack.
func TestDefaultPoolsOnBuiltinImages(t *testing.T) {
	layouts := map[string]string{}
	for _, name := range []string{"python", "shell"} {
		dir := filepath.Join(imagebuild.CacheDir(), name)
		if _, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
			t.Skipf("SKIP: the built-in image %q is not built (%s): run scripts/images.sh", name, dir)
		}
		layouts[name] = dir
	}
	b := startBerth(t, "", "--builtin-image", "python="+layouts["python"], "--builtin-image", "shell="+layouts["shell"],
		"--apply", filepath.Join(testutil.ModuleRoot(), "examples", "pools", "python.yaml"))
	var v controlplane.PoolView
	b.cliJSON(&v, "pool", "show", "default")
	if v.Image != "builtin:shell" || !strings.HasPrefix(v.ImageDigest, "sha256:") {
		t.Fatalf("default pool: image %q (%q)", v.Image, v.ImageDigest)
	}
	key := strings.TrimSpace(b.cli("pool", "credentials", "default"))
	if r := b.execute("default", key, "builtin-sh", "id -un; command -v jq git curl | wc -l"); r.Stdout != "user\n3\n" {
		t.Fatalf("default pool's shell: %+v", r)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, _, code := b.try("pool", "show", "python"); code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the example python pool was not applied")
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.cliJSON(&v, "pool", "show", "python")
	if v.Type != "python" || v.Image != "builtin:python" || !v.MCP {
		t.Fatalf("python pool: %+v", v.Config)
	}
	pyKey := strings.TrimSpace(b.cli("pool", "credentials", "python"))
	r := b.execute("python", pyKey, "builtin-py", "import numpy, pandas, matplotlib, scipy\nint(numpy.arange(4).sum()) + len(pandas.DataFrame({'a': [1, 2]}))")
	if r.Status != "Success" || string(r.Result) != "8" {
		t.Fatalf("python pool's data stack: %+v", r)
	}
	checkFigures(t, b, v, pyKey)
}

// figureCode draws a figure and shows it, as an LLM's code would.
const figureCode = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title('squares')\nplt.show()"

// checkFigures runs figureCode in the python pool v on the built-in image:
// over REST the result is Azure's image object (a PNG), over MCP an image
// content item.
func checkFigures(t *testing.T, b *berth, v controlplane.PoolView, key string) {
	t.Helper()
	r := b.execute("python", key, "builtin-fig", figureCode)
	var img dataplane.ImageResult
	if err := json.Unmarshal(r.Result, &img); err != nil || r.Status != "Success" || img.Type != "image" || img.Format != "png" {
		t.Fatalf("figure over REST: %+v (%v)", r, err)
	}
	if !bytes.HasPrefix(img.Base64Data, []byte("\x89PNG")) {
		t.Fatalf("figure over REST is no PNG (%d bytes)", len(img.Base64Data))
	}
	c, err := dialMCP(t, v.Endpoints.MCP, key, false, "")
	if err != nil {
		t.Fatal(err)
	}
	id := c.launch()
	res, err := c.try(mcpserver.ToolRunPython, map[string]any{"environmentId": id, "pythonCode": figureCode})
	if err != nil || res.IsError {
		t.Fatalf("figure over MCP: %v %+v", err, res)
	}
	var found bool
	for _, ct := range res.Content {
		if im, ok := ct.(*mcp.ImageContent); ok && im.MIMEType == "image/png" && bytes.HasPrefix(im.Data, []byte("\x89PNG")) {
			found = true
		}
	}
	if !found {
		t.Fatalf("figure over MCP: no image/png content in %d items", len(res.Content))
	}
}

func (b *berth) poolView(name string) controlplane.PoolView {
	b.t.Helper()
	var v controlplane.PoolView
	b.cliJSON(&v, "pool", "show", name)
	return v
}
