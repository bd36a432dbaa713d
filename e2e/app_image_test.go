package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/app"
	"github.com/berth-dev/berth/controlplane"
	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/internal/imagetest"
	"github.com/berth-dev/berth/internal/registrytest"
	"github.com/berth-dev/berth/server"
)

// everythingImage is the go-sdk conformance server (static) on an empty
// base, run as the image's user "app" (1000), listening on 8080.
func everythingImage(t testing.TB) v1.Image {
	t.Helper()
	bin, err := os.ReadFile(filepath.Join(everythingServer(t), "everything-server"))
	if err != nil {
		t.Fatal(err)
	}
	return imagetest.Image(t, v1.Config{
		User:         "app",
		Entrypoint:   []string{"/everything-server"},
		Cmd:          []string{"-http", "127.0.0.1:8080", "-stateless=false"},
		ExposedPorts: map[string]struct{}{"8080/tcp": {}},
	}, imagetest.Layer(t, imagetest.Mode(imagetest.File("everything-server", string(bin)), 0o755),
		imagetest.File("etc/passwd", "root:x:0:0:root:/root:/sbin/nologin\napp:x:1000:1000:app:/home/app:/sbin/nologin\n"),
		imagetest.File("etc/group", "root:x:0:\napp:x:1000:\n"), imagetest.Owned(imagetest.Dir("home/app"), 1000, 1000)))
}

// cliStdin runs a berth command with stdin.
func (b *berth) cliStdin(stdin string, args ...string) (string, string, int) {
	cmd := exec.Command(b.bin, args...)
	cmd.Env = append(os.Environ(), "BERTH_DATA_DIR="+b.dataDir)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errOut.String(), ee.ExitCode()
	} else if err != nil {
		b.t.Fatal(err)
	}
	return out.String(), errOut.String(), 0
}

// TestAppImageConformance deploys the go-sdk conformance server as an
// image from a registry that wants a login, with the app's own
// credentials: 3 replicas pass the conformance suite through the gateway
// as the server does directly, and so does the same image as a stdio app.
func TestAppImageConformance(t *testing.T) {
	in := needInterop(t)
	reg := registrytest.Start(t, registrytest.Options{User: "bob", Password: "imgapps-pass"})
	digest := imagetest.Push(t, reg.Ref("mcp/everything:1"), everythingImage(t), imagetest.BasicAuth("bob", "imgapps-pass"))
	dataDir := t.TempDir()
	b := startBerth(t, dataDir, "--insecure-registry", reg.Host)

	port := freePort(t)
	direct := exec.Command(filepath.Join(everythingServer(t), "everything-server"), "-http", "127.0.0.1:"+strconv.Itoa(port), "-stateless=false")
	if err := direct.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = direct.Process.Kill(); _ = direct.Wait() }()
	waitTCP(t, port)
	want := runConformance(t, in, "http://127.0.0.1:"+strconv.Itoa(port)+"/mcp")

	// Anonymous, then with a wrong password: the deploy fails, saying why.
	if _, errOut, code := b.try("app", "deploy", "everything", "--image", reg.Ref("mcp/everything:1"), "--min", "3", "--max", "3"); code == 0 || !strings.Contains(errOut, "UNAUTHORIZED") {
		t.Fatalf("anonymous deploy: exit %d: %s", code, errOut)
	}
	login := []string{"--registry-server", reg.Host, "--registry-username", "bob", "--registry-password-stdin"}
	if _, errOut, code := b.cliStdin("wrong\n", append([]string{"app", "deploy", "everything", "--image", reg.Ref("mcp/everything:1"), "--min", "3", "--max", "3"}, login...)...); code == 0 ||
		!strings.Contains(errOut, "UNAUTHORIZED") || !strings.Contains(errOut, reg.Ref("mcp/everything:1")) {
		t.Fatalf("deploy with a wrong password: exit %d: %s", code, errOut)
	}
	if len(b.cli("app", "list")) > 0 && strings.Contains(b.cli("app", "list"), "everything") {
		t.Fatalf("a failed first deploy left an app")
	}
	if _, errOut, code := b.cliStdin("imgapps-pass\n", append([]string{"app", "deploy", "everything", "--image", reg.Ref("mcp/everything:1"), "--min", "3", "--max", "3"}, login...)...); code != 0 {
		t.Fatalf("deploy: exit %d: %s", code, errOut)
	}
	v := b.waitReplicas("everything", 3)
	src := v.Revisions[0].Config.Source
	if src == nil || src.Image != reg.Ref("mcp/everything")+"@"+digest.String() || v.Revisions[0].Config.Port != 8080 {
		t.Fatalf("revision source %+v, port %d: want the digest and the image's port", src, v.Revisions[0].Config.Port)
	}
	for _, r := range v.Revisions[0].Config.Registries {
		if r.Password != "" {
			t.Fatalf("the revision shows the registry password")
		}
	}
	for _, f := range []string{"berth.db", "berth.db-wal"} {
		if raw, _ := os.ReadFile(filepath.Join(dataDir, f)); bytes.Contains(raw, []byte("imgapps-pass")) {
			t.Fatalf("%s holds the app's registry password in clear", f)
		}
	}
	got := runConformance(t, in, b.info.PublicURL+"/apps/everything/mcp")
	t.Logf("direct:\n%s\nthrough Berth (image, 3 replicas):\n%s", want.text, got.text)
	if !maps.Equal(want.status, got.status) {
		t.Fatalf("results through the gateway differ from the direct ones")
	}
	spread := 0
	for _, r := range b.appShow("everything").Replicas {
		if r.Sessions > 0 {
			spread++
		}
	}
	if spread < 2 {
		t.Errorf("all sessions landed on one replica: %+v", b.appShow("everything").Replicas)
	}

	// The same image as a stdio server: --command replaces the Entrypoint
	// and drops the image's Cmd (its -http flag).
	if _, errOut, code := b.cliStdin("imgapps-pass\n", append([]string{"app", "deploy", "everything-stdio", "--image", reg.Ref("mcp/everything:1"),
		"--command", "/everything-server", "--transport", "stdio", "--min", "1"}, login...)...); code != 0 {
		t.Fatalf("stdio deploy: exit %d: %s", code, errOut)
	}
	b.waitReplicas("everything-stdio", 1)
	stdio := runConformance(t, in, b.info.PublicURL+"/apps/everything-stdio/mcp")
	t.Logf("through Berth (image, stdio):\n%s", stdio.text)
	if !maps.Equal(want.status, stdio.status) {
		t.Fatalf("stdio results through the gateway differ from the direct ones")
	}
}

func waitTCP(t testing.TB, port int) {
	t.Helper()
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			c.Close()
			return
		}
		if i > 200 {
			t.Fatalf("nothing listens on %d", port)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// idsGo serves what the app sees of itself: its ids, directory and
// environment, and whether it can write files its image user owns.
const idsGo = `package main

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
)

func main() {
	http.HandleFunc("/info", func(w http.ResponseWriter, r *http.Request) {
		cwd, _ := os.Getwd()
		m, _ := os.ReadFile("/proc/self/uid_map")
		out := map[string]any{"uid": os.Getuid(), "gid": os.Getgid(), "cwd": cwd, "version": os.Getenv("VERSION"),
			"home": os.Getenv("HOME"), "uidMap": strings.TrimSpace(string(m)), "args": os.Args[1:]}
		werr := ""
		if err := os.WriteFile("/home/app/new", []byte("x"), 0o644); err != nil {
			werr = err.Error()
		} else if f, err := os.OpenFile("/home/app/data", os.O_WRONLY|os.O_APPEND, 0); err != nil {
			werr = err.Error()
		} else {
			_, err = f.WriteString("more")
			f.Close()
			if err != nil {
				werr = err.Error()
			}
		}
		out["writeError"] = werr
		if err := os.WriteFile("/etc/owned-by-root", []byte("x"), 0o644); err == nil {
			out["rootWrite"] = "allowed"
		}
		json.NewEncoder(w).Encode(out)
	})
	http.HandleFunc("/exit", func(w http.ResponseWriter, r *http.Request) { os.Exit(3) })
	http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), nil)
}
`

type idsInfo struct {
	UID, GID           int
	Cwd, Version, Home string
	UIDMap             string
	Args               []string
	WriteError         string
	RootWrite          string
}

// idsImage is idsGo as user app (1000) with VERSION=version, owning
// /home/app/data.
func idsImage(t testing.TB, bin []byte, version string) v1.Image {
	e := imagetest.Mode(imagetest.File("prog", string(bin)), 0o755)
	return imagetest.Image(t, v1.Config{
		User: "app", Entrypoint: []string{"/prog"}, Cmd: []string{"from-image"}, WorkingDir: "/home/app",
		Env: []string{"VERSION=" + version}, ExposedPorts: map[string]struct{}{"8080/tcp": {}},
	}, imagetest.Layer(t, e, imagetest.File("etc/passwd", "root:x:0:0:root:/root:/prog\napp:x:1000:1000:app:/home/app:/prog\n"),
		imagetest.File("etc/group", "root:x:0:\napp:x:1000:\n"), imagetest.Owned(imagetest.Dir("home/app"), 1000, 1000),
		imagetest.Owned(imagetest.File("home/app/data", "image data"), 1000, 1000)))
}

func (b *berth) appInfo(name string) idsInfo {
	b.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := b.do(http.MethodGet, "/apps/"+name+"/info", nil, nil)
		var info idsInfo
		if r.Status == http.StatusOK && json.Unmarshal(r.Body, &info) == nil {
			return info
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("GET /apps/%s/info: %d %s", name, r.Status, r.Body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// hostUIDsOf lists the host uids of processes whose command line has mark.
func hostUIDsOf(t testing.TB, mark string) []int {
	var out []int
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		cl, err := os.ReadFile(filepath.Join(p, "cmdline"))
		if err != nil || !bytes.Contains(cl, []byte(mark)) || !bytes.HasPrefix(cl, []byte("/prog\x00")) {
			continue
		}
		st, _ := os.ReadFile(filepath.Join(p, "status"))
		for _, l := range strings.Split(string(st), "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" {
				n, _ := strconv.Atoi(f[1])
				out = append(out, n)
			}
		}
	}
	return out
}

// TestAppImageUsersAndDigests runs an image as its user: not host root,
// not host uid 1000, able to write the files its image user owns. The
// revision keeps the digest its tag had: a tag moved after the deploy
// changes nothing for it (not its replicas' restarts, not prune); a new
// deploy, here from a remote CLI in another directory, picks the new one.
func TestAppImageUsersAndDigests(t *testing.T) {
	for _, rt := range []string{"bwrap", "gvisor"} {
		t.Run(rt, func(t *testing.T) { testAppImageUsersAndDigests(t, rt) })
	}
}

func testAppImageUsersAndDigests(t *testing.T, runtime string) {
	reg := registrytest.Start(t, registrytest.Options{})
	bin := imagetest.GoBinary(t, idsGo)
	d1 := imagetest.Push(t, reg.Ref("ids:latest"), idsImage(t, bin, "v1"))
	b := startBerth(t, "", "--insecure-registry", reg.Host, "--app-runtime", runtime)
	mark := "imgapps-" + runtime
	b.cli("app", "deploy", "ids", "--image", reg.Ref("ids:latest"), "--min", "1", "--args", "'from flag' "+mark)
	b.waitReplicas("ids", 1)
	info := b.appInfo("ids")
	t.Logf("%s: %+v", runtime, info)
	if info.UID != 1000 || info.GID != 1000 || info.Cwd != "/home/app" || info.Home != "/home/app" || info.Version != "v1" ||
		strings.Join(info.Args, "|") != "from flag|"+mark {
		t.Fatalf("the app does not run as its image says: %+v", info)
	}
	if info.WriteError != "" {
		t.Fatalf("the image user cannot write its own files: %s", info.WriteError)
	}
	if info.RootWrite != "" {
		t.Fatalf("the image user can write a directory of the image's root")
	}
	if runtime == "bwrap" {
		uids := hostUIDsOf(t, mark)
		if len(uids) == 0 {
			t.Fatalf("no host process of the app")
		}
		for _, u := range uids {
			if u == 0 || u == 1000 || u < 65536 { // apps get host uids from 900,000 up
				t.Fatalf("the app runs as host uid %d", u)
			}
		}
	}

	// The tag moves; the revision does not.
	d2 := imagetest.Push(t, reg.Ref("ids:latest"), idsImage(t, bin, "v2"))
	if d1 == d2 {
		t.Fatal("the two images have one digest")
	}
	if out := b.cli("image", "prune"); !strings.HasPrefix(out, "freed ") {
		t.Fatalf("prune: %s", out)
	}
	_ = b.do(http.MethodGet, "/apps/ids/exit", nil, nil) // the replica restarts
	time.Sleep(2 * time.Second)
	b.waitReplicas("ids", 1)
	if info := b.appInfo("ids"); info.Version != "v1" {
		t.Fatalf("after the tag moved, the revision runs %q", info.Version)
	}
	v := b.appShow("ids")
	if src := v.Revisions[0].Config.Source; src.Image != reg.Ref("ids")+"@"+d1.String() || src.ImageTag != reg.Ref("ids:latest") {
		t.Fatalf("revision source %+v", src)
	}

	// A deploy from elsewhere, with --server and --token only.
	if _, errOut, code := b.remoteCLI(t.TempDir(), "app", "deploy", "ids", "--image", reg.Ref("ids:latest"), "--min", "1"); code != 0 {
		t.Fatalf("remote deploy: exit %d: %s", code, errOut)
	}
	deadline := time.Now().Add(60 * time.Second)
	for b.appInfo("ids").Version != "v2" {
		if time.Now().After(deadline) {
			t.Fatalf("the new deploy does not run the tag's new image")
		}
		time.Sleep(200 * time.Millisecond)
	}
	v = b.appShow("ids")
	if src := v.Revisions[1].Config.Source; src.Image != reg.Ref("ids")+"@"+d2.String() {
		t.Fatalf("second revision source %+v", src)
	}
	if info := b.appInfo("ids"); len(info.Args) != 1 || info.Args[0] != "from-image" {
		t.Fatalf("without --args the image's Cmd runs: %+v", info.Args)
	}
	// Both images are in use (the first revision is still stored).
	b.cli("image", "prune")
	var list []image.Image
	b.cliJSON(&list, "image", "list")
	if len(list) != 2 {
		t.Fatalf("prune removed an image a revision runs: %+v", list)
	}
	b.cli("app", "delete", "ids")
	b.cli("image", "prune")
	b.cliJSON(&list, "image", "list")
	if len(list) != 0 {
		t.Fatalf("prune kept images no revision runs: %+v", list)
	}
}

// TestAppImagePullKilled kills the server (SIGKILL) while a deploy pulls
// an image whose big layer the registry sends only half of: after a
// restart nothing of that pull is left (no temporary files, no root, no
// app, no mounts or loop devices), and the next deploy pulls it again.
func TestAppImagePullKilled(t *testing.T) {
	big := make([]byte, 4<<20)
	_, _ = rand.Read(big)
	bigLayer := imagetest.Layer(t, imagetest.File("big", string(big)))
	bigDigest, err := bigLayer.Digest()
	if err != nil {
		t.Fatal(err)
	}
	var hold atomic.Bool
	hold.Store(true)
	started := make(chan struct{}, 10)
	var gets atomic.Int32
	reg := registrytest.Start(t, registrytest.Options{Wrap: func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+bigDigest.String()) {
				next.ServeHTTP(w, r)
				return
			}
			gets.Add(1)
			if !hold.Load() {
				next.ServeHTTP(w, r)
				return
			}
			rc, _ := bigLayer.Compressed()
			defer rc.Close()
			size, _ := bigLayer.Size()
			w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
			w.WriteHeader(http.StatusOK)
			_, _ = io.CopyN(w, rc, size/2)
			w.(http.Flusher).Flush()
			started <- struct{}{}
			<-r.Context().Done() // the rest never comes
		})
	}})
	bin := imagetest.GoBinary(t, idsGo)
	img := imagetest.Image(t, v1.Config{Entrypoint: []string{"/prog"}, ExposedPorts: map[string]struct{}{"8080/tcp": {}}},
		imagetest.Layer(t, imagetest.Mode(imagetest.File("prog", string(bin)), 0o755)), bigLayer)
	imagetest.Push(t, reg.Ref("slow:1"), img)
	dataDir := t.TempDir()
	b := startBerth(t, dataDir, "--insecure-registry", reg.Host)
	deploy := exec.Command(b.bin, "app", "deploy", "slow", "--image", reg.Ref("slow:1"), "--min", "1")
	deploy.Env = append(os.Environ(), "BERTH_DATA_DIR="+dataDir)
	if err := deploy.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(60 * time.Second):
		t.Fatal("the pull did not reach the big layer")
	}
	tmp := filepath.Join(dataDir, "images", "tmp")
	if ents, _ := os.ReadDir(tmp); len(ents) == 0 {
		t.Fatalf("no pull in progress in %s", tmp)
	}
	_ = b.cmd.Process.Kill()
	<-b.exited
	_ = deploy.Wait()

	b = startBerth(t, dataDir, "--insecure-registry", reg.Host)
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Fatalf("the killed pull left %v in %s", ents, tmp)
	}
	if roots, _ := os.ReadDir(filepath.Join(dataDir, "images", "rootfs", "sha256")); len(roots) != 0 {
		t.Fatalf("the killed pull left a root: %v", roots)
	}
	if out := b.cli("app", "list"); strings.Contains(out, "slow") {
		t.Fatalf("the killed deploy left an app:\n%s", out)
	}
	abs, _ := filepath.Abs(dataDir)
	inst := filepath.Join("/var/lib/berth", server.Instance(abs))
	// The running server's own tmpfs for secret volumes is expected.
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	mi = regexp.MustCompile(`(?m)^.* `+regexp.QuoteMeta(inst+"/apps-secrets")+` .*\n`).ReplaceAll(mi, nil)
	if bytes.Contains(mi, []byte(abs)) || bytes.Contains(mi, []byte(inst+"/")) {
		t.Fatalf("mounts left:\n%s", mi)
	}
	if out, err := exec.Command("losetup", "-a").Output(); err == nil && bytes.Contains(out, []byte(inst+"/")) {
		t.Fatalf("loop devices left:\n%s", out)
	}
	hold.Store(false)
	before := gets.Load()
	b.cli("app", "deploy", "slow", "--image", reg.Ref("slow:1"), "--min", "1")
	b.waitReplicas("slow", 1)
	if gets.Load() == before {
		t.Fatalf("the layer was not downloaded again")
	}
}

// duBytes is the disk space used under dir on its own file system (du -sx:
// a sandbox's disk image counts what it holds, not the mounts on it).
func duBytes(t testing.TB, dir string) int64 {
	out, err := exec.Command("du", "-sx", "--block-size=1", dir).Output()
	if err != nil {
		t.Fatalf("du %s: %v", dir, err)
	}
	n, _ := strconv.ParseInt(strings.Fields(string(out))[0], 10, 64)
	return n
}

// BenchmarkImageReplicasDisk measures the disk that N replicas of one
// image use: one shared root, and per replica only its disk's own writes
// (the overlay's upper layer and /tmp on its sparse disk image).
func BenchmarkImageReplicasDisk(b *testing.B) {
	const n = 5
	reg := registrytest.Start(b, registrytest.Options{})
	imagetest.Push(b, reg.Ref("bench/everything:1"), everythingImage(b))
	dataDir := b.TempDir()
	srv := startBerth(b, dataDir, "--insecure-registry", reg.Host)
	abs, _ := filepath.Abs(dataDir)
	inst := filepath.Join("/var/lib/berth", server.Instance(abs))
	srv.cli("image", "pull", reg.Ref("bench/everything:1"))
	base := duBytes(b, inst)
	for i := 0; i < b.N; i++ {
		srv.cli("app", "deploy", "disk", "--image", reg.Ref("bench/everything:1"), "--min", strconv.Itoa(n), "--max", strconv.Itoa(n))
		srv.waitReplicas("disk", n)
	}
	time.Sleep(time.Second) // the spare sandbox too
	rootfs := duBytes(b, filepath.Join(dataDir, "images", "rootfs"))
	total := duBytes(b, inst) - base
	b.ReportMetric(float64(rootfs)/(1<<20), "image-root-MiB")
	b.ReportMetric(float64(total)/(n+1)/(1<<10), "per-sandbox-KiB")
	b.ReportMetric(float64(rootfs+total)/(1<<20), "total-MiB")
	b.ReportMetric(float64(rootfs*n)/(1<<20), "copies-would-be-MiB")
}

// TestAppImageApply deploys an image with berth apply (Container Apps'
// template.containers[].image, command, args, env, resources): the
// image runs as the file says, and applying the file again makes no new
// revision although the revision keeps a digest and the file a tag.
func TestAppImageApply(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{User: "dora", Password: "yaml-registry-pass"})
	imagetest.Push(t, reg.Ref("ids:1"), idsImage(t, imagetest.GoBinary(t, idsGo), "v1"), imagetest.BasicAuth("dora", "yaml-registry-pass"))
	b := startBerth(t, "", "--insecure-registry", reg.Host)
	dir := t.TempDir()
	file := filepath.Join(dir, "app.yaml")
	manifest := `name: ids-yaml
properties:
  configuration:
    registries: [{server: ` + reg.Host + `, username: dora, passwordSecretRef: reg-pass}]
  template:
    containers:
      - image: ` + reg.Ref("ids:1") + `
        command: ["/prog"]
        args: ["from yaml"]
        env: [{name: VERSION, value: from-yaml}]
        resources: {cpu: 0.5, memory: 0.5Gi}
    scale: {minReplicas: 1, maxReplicas: 2}
`
	if err := os.WriteFile(file, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	// The registry's password is one of the app's secrets: named before it
	// exists, the apply says how to set it.
	if _, errOut, code := b.cliStdin("", "apply", "-f", file); code == 0 || !strings.Contains(errOut, "berth secret set ids-yaml reg-pass") {
		t.Fatalf("apply with a missing registry secret: exit %d: %s", code, errOut)
	}
	if _, errOut, code := b.cliStdin("yaml-registry-pass", "secret", "set", "ids-yaml", "reg-pass"); code != 0 {
		t.Fatalf("secret set: %s", errOut)
	}
	if out := b.cli("apply", "-f", file); !strings.Contains(out, "revision ids-yaml--r1 created") {
		t.Fatalf("apply: %s", out)
	}
	b.waitReplicas("ids-yaml", 1)
	if info := b.appInfo("ids-yaml"); info.Version != "from-yaml" || strings.Join(info.Args, "|") != "from yaml" || info.UID != 1000 {
		t.Fatalf("the app does not run as the file says: %+v", info)
	}
	v := b.appShow("ids-yaml")
	if c := v.Revisions[0].Config; c.MemoryBytes != 512<<20 || c.CPU != 0.5 || c.Port != 8080 {
		t.Fatalf("revision config %+v", c)
	}
	if out := b.cli("apply", "-f", file); !strings.Contains(out, "template unchanged") {
		t.Fatalf("second apply: %s", out)
	}
}

// TestAppImageDeployProgress asks the control API for a deploy's progress
// (Accept: application/x-ndjson): the image's layers' download and unpack,
// then the revision; an image the registry lacks ends with an error line.
func TestAppImageDeployProgress(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	imagetest.Push(t, reg.Ref("ids:1"), idsImage(t, imagetest.GoBinary(t, idsGo), "v1"))
	b := startBerth(t, "", "--insecure-registry", reg.Host)
	deploy := func(ref string) []controlplane.DeployEvent {
		body, _ := json.Marshal(app.Config{Source: &app.Source{Image: ref}})
		req, _ := http.NewRequest(http.MethodPost, b.info.AdminURL+"/v1/apps/progress/revisions", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+b.token())
		req.Header.Set("Accept", "application/x-ndjson")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
			t.Fatalf("content type %q", ct)
		}
		var evs []controlplane.DeployEvent
		dec := json.NewDecoder(resp.Body)
		for {
			var ev controlplane.DeployEvent
			if err := dec.Decode(&ev); err == io.EOF {
				return evs
			} else if err != nil {
				t.Fatal(err)
			}
			evs = append(evs, ev)
		}
	}
	evs := deploy(reg.Ref("ids:1"))
	statuses := map[string]bool{}
	for _, ev := range evs[:len(evs)-1] {
		if ev.Progress == nil {
			t.Fatalf("not a progress line: %+v", ev)
		}
		statuses[ev.Progress.Status] = true
	}
	last := evs[len(evs)-1]
	if !statuses["downloaded"] || !statuses["unpacked"] || last.Result == nil || last.Result.Revision.Name != "progress--r1" {
		t.Fatalf("events: %+v", evs)
	}
	evs = deploy(reg.Ref("nothing:1"))
	if last := evs[len(evs)-1]; last.Error == "" || last.Code != "InvalidSetting" || !strings.Contains(last.Error, "nothing:1") {
		t.Fatalf("deploy of a missing image: %+v", evs)
	}
}

// TestAppImagePulledAgain: a revision whose image is no longer in the
// store (removed behind the server's back) pulls it again by digest, with
// the app's own registry login, when it next starts a replica.
func TestAppImagePulledAgain(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{User: "carol", Password: "imgapps-again"})
	d := imagetest.Push(t, reg.Ref("ids:1"), idsImage(t, imagetest.GoBinary(t, idsGo), "v1"), imagetest.BasicAuth("carol", "imgapps-again"))
	dataDir := t.TempDir()
	b := startBerth(t, dataDir, "--insecure-registry", reg.Host)
	if _, errOut, code := b.cliStdin("imgapps-again\n", "app", "deploy", "again", "--image", reg.Ref("ids:1"), "--min", "1",
		"--registry-server", reg.Host, "--registry-username", "carol", "--registry-password-stdin"); code != 0 {
		t.Fatalf("deploy: %s", errOut)
	}
	b.waitReplicas("again", 1)
	b.stop()
	for _, sub := range []string{"rootfs/sha256", "meta/sha256", "blobs/sha256"} {
		ents, _ := os.ReadDir(filepath.Join(dataDir, "images", sub))
		for _, e := range ents {
			if err := os.RemoveAll(filepath.Join(dataDir, "images", sub, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	b = startBerth(t, dataDir, "--insecure-registry", reg.Host)
	b.waitReplicas("again", 1)
	if info := b.appInfo("again"); info.Version != "v1" {
		t.Fatalf("after the pull again: %+v", info)
	}
	var list []image.Image
	b.cliJSON(&list, "image", "list")
	if len(list) != 1 || list[0].Digest != d.String() {
		t.Fatalf("images: %+v", list)
	}
	b.waitLog("pulling the revision's image again")
}
