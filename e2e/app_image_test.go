package e2e

import (
	"bytes"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/internal/imagetest"
	"github.com/berth-dev/berth/internal/registrytest"
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
