package image_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/internal/imagetest"
	"github.com/berth-dev/berth/internal/registrytest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

const shift = 1_500_000_000

func open(t *testing.T, dir string, o image.Options) *image.Store {
	t.Helper()
	s, err := image.Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newStore(t *testing.T, reg *registrytest.Registry) *image.Store {
	t.Helper()
	return open(t, filepath.Join(t.TempDir(), "images"), image.Options{Insecure: []string{reg.Host}, IDShift: shift})
}

const helloGo = `package main

import "fmt"

func main() { fmt.Println("hello from the image") }
`

func TestPullByTag(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	img := imagetest.GoImage(t, helloGo, v1.Config{
		Cmd: []string{"-x"}, Env: []string{"A=1"}, User: "app", WorkingDir: "/work/dir",
		ExposedPorts: map[string]struct{}{"9090/tcp": {}, "8080/tcp": {}, "8080/udp": {}},
	})
	want := imagetest.Push(t, reg.Ref("hello:v1"), img)
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		shift uint32
	}{{"shifted", shift}, {"unshifted", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, filepath.Join(t.TempDir(), "images"), image.Options{Insecure: []string{reg.Host}, IDShift: tc.shift})
			t0 := time.Now()
			im, err := s.Pull(ctx, reg.Ref("hello:v1"), image.PullOptions{})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("first pull %v", time.Since(t0))
			if im.Digest != want.String() {
				t.Fatalf("digest %s, want %s", im.Digest, want)
			}
			c := im.Config
			if strings.Join(c.Entrypoint, " ") != "/prog" || strings.Join(c.Cmd, " ") != "-x" || c.WorkingDir != "/work/dir" ||
				c.User != "app" || c.UID != 1000 || c.GID != 1000 || c.Home != "/home/app" || len(c.Env) != 1 ||
				len(c.ExposedPorts) != 2 || c.ExposedPorts[0] != 8080 || c.ExposedPorts[1] != 9090 {
				t.Fatalf("config %+v", c)
			}
			out, err := exec.Command(filepath.Join(im.RootFS, "prog")).Output()
			if err != nil || string(out) != "hello from the image\n" {
				t.Fatalf("running the unpacked binary: %q %v", out, err)
			}
			owner := func(p string) (uint32, uint32, os.FileMode) {
				fi, err := os.Lstat(filepath.Join(im.RootFS, p))
				if err != nil {
					t.Fatal(err)
				}
				st := fi.Sys().(*syscall.Stat_t)
				return st.Uid, st.Gid, fi.Mode()
			}
			if u, g, _ := owner("home/app"); u != tc.shift+1000 || g != tc.shift+1000 {
				t.Errorf("home/app owned by %d:%d, want %d", u, g, tc.shift+1000)
			}
			if u, _, _ := owner("prog"); u != tc.shift {
				t.Errorf("prog owned by %d, want %d", u, tc.shift)
			}
			// Directories no layer names (etc, home, work) are image root's,
			// not host root's: an idmapped mount shows host root's as nobody's.
			for _, d := range []string{"proc", "dev", "sys", "tmp", "run", "etc", "home", "mnt/data", ".berth", "work", "work/dir", "etc/resolv.conf", "etc/hosts", "etc/hostname"} {
				if u, g, _ := owner(d); u != tc.shift || g != tc.shift {
					t.Errorf("%s owned by %d:%d, want %d", d, u, g, tc.shift)
				}
			}
			if _, _, m := owner("tmp"); m&os.ModeSticky == 0 || m.Perm() != 0o777 {
				t.Errorf("tmp mode %v", m)
			}
			if im.Size < 500_000 {
				t.Errorf("size %d", im.Size)
			}
			t0 = time.Now()
			again, err := s.Pull(ctx, reg.Ref("hello:v1"), image.PullOptions{})
			if err != nil || again.Digest != im.Digest || again.RootFS != im.RootFS {
				t.Fatalf("second pull: %+v %v", again, err)
			}
			t.Logf("second pull of a cached digest by tag: %v", time.Since(t0))
			t0 = time.Now()
			if _, err := s.Pull(ctx, reg.Host+"/hello@"+im.Digest, image.PullOptions{}); err != nil {
				t.Fatal(err)
			}
			t.Logf("pull of a cached digest by digest: %v", time.Since(t0))
			got, err := s.Get(im.Digest)
			if err != nil || got.RootFS != im.RootFS {
				t.Fatalf("Get: %+v %v", got, err)
			}
			list, err := s.List()
			if err != nil || len(list) != 1 || len(list[0].Refs) != 2 {
				t.Fatalf("List: %+v %v", list, err)
			}
		})
	}
}

func TestUser(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	s := newStore(t, reg)
	passwd := imagetest.File("etc/passwd", "root:x:0:0::/root:/bin/sh\nweb:x:33:44::/srv:/bin/sh\n")
	group := imagetest.File("etc/group", "root:x:0:\nstaff:x:50:\n")
	for _, tc := range []struct {
		user     string
		uid, gid uint32
		err      string
	}{
		{"", 0, 0, ""}, {"web", 33, 44, ""}, {"33", 33, 44, ""}, {"web:staff", 33, 50, ""},
		{"1234", 1234, 0, ""}, {"1234:99", 1234, 99, ""},
		{"ghost", 0, 0, `user "ghost" is not in the image's /etc/passwd`},
		{"web:ghosts", 0, 0, `group "ghosts" is not in the image's /etc/group`},
	} {
		ref := reg.Ref("user:t" + strings.NewReplacer(":", "-").Replace(tc.user) + "x")
		imagetest.Push(t, ref, imagetest.Image(t, v1.Config{User: tc.user}, imagetest.Layer(t, passwd, group)))
		im, err := s.Pull(context.Background(), ref, image.PullOptions{})
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("user %q: error %v, want %q", tc.user, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("user %q: %v", tc.user, err)
		}
		if im.Config.UID != tc.uid || im.Config.GID != tc.gid {
			t.Errorf("user %q: %d:%d, want %d:%d", tc.user, im.Config.UID, im.Config.GID, tc.uid, tc.gid)
		}
	}
}

func TestIndexSelectsAmd64(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	s := newStore(t, reg)
	amd := imagetest.Image(t, v1.Config{}, imagetest.Layer(t, imagetest.File("arch", "amd64")))
	arm := imagetest.PlatformImage(t, v1.Platform{OS: "linux", Architecture: "arm64"}, v1.Config{}, imagetest.Layer(t, imagetest.File("arch", "arm64")))
	imagetest.Push(t, reg.Ref("multi:1"), imagetest.Index(t, arm, amd))
	imagetest.Push(t, reg.Ref("armonly:1"), imagetest.Index(t, arm))
	imagetest.Push(t, reg.Ref("armimage:1"), arm)
	im, err := s.Pull(context.Background(), reg.Ref("multi:1"), image.PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := amd.Digest()
	b, _ := os.ReadFile(filepath.Join(im.RootFS, "arch"))
	if im.Digest != want.String() || string(b) != "amd64" {
		t.Fatalf("got %s with arch %q, want %s", im.Digest, b, want)
	}
	for _, ref := range []string{"armonly:1", "armimage:1"} {
		_, err = s.Pull(context.Background(), reg.Ref(ref), image.PullOptions{})
		if err == nil || !strings.Contains(err.Error(), "linux/amd64") {
			t.Errorf("%s: %v, want an error naming linux/amd64", ref, err)
		}
	}
}

// corrupt flips one byte of every blob it serves.
func corrupt(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/") {
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(&flipper{ResponseWriter: w}, r)
	})
}

type flipper struct {
	http.ResponseWriter
	done bool
}

func (f *flipper) Write(b []byte) (int, error) {
	if !f.done && len(b) > 100 {
		c := append([]byte(nil), b...)
		c[len(c)/2] ^= 0xff
		f.done = true
		return f.ResponseWriter.Write(c)
	}
	return f.ResponseWriter.Write(b)
}

func TestCorruptBlobFails(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{Wrap: corrupt})
	s := newStore(t, reg)
	big := strings.Repeat("0123456789abcdef", 4096)
	img := imagetest.Image(t, v1.Config{}, imagetest.Layer(t, imagetest.File("big", big)))
	imagetest.Push(t, reg.Ref("bad:1"), img)
	_, err := s.Pull(context.Background(), reg.Ref("bad:1"), image.PullOptions{})
	if err == nil {
		t.Fatal("a corrupted blob was accepted")
	}
	t.Logf("error: %v", err)
	if !strings.Contains(err.Error(), "sha256") {
		t.Errorf("error does not name the digest: %v", err)
	}
	for _, d := range []string{"blobs/sha256", "rootfs/sha256", "tmp"} {
		ents, _ := os.ReadDir(filepath.Join(s.Dir(), d))
		for _, e := range ents {
			if d != "blobs/sha256" || e.Name() != configHex(t, img) {
				t.Errorf("left behind: %s/%s", d, e.Name())
			}
		}
	}
}

func configHex(t *testing.T, img v1.Image) string {
	h, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return h.Hex
}

type creds map[string][2]string

func (c creds) RegistryCredential(_ context.Context, host string) (string, string, bool, error) {
	v, ok := c[host]
	return v[0], v[1], ok, nil
}

func TestRegistryAuth(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{User: "alice", Password: "s3cret"})
	imagetest.Push(t, reg.Ref("private:1"), imagetest.Image(t, v1.Config{}, imagetest.Layer(t, imagetest.File("x", "y"))), imagetest.BasicAuth("alice", "s3cret"))
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		auth  *image.Auth
		store creds
		ok    bool
	}{
		{"anonymous", nil, nil, false},
		{"wrong password", &image.Auth{User: "alice", Password: "nope"}, nil, false},
		{"right password", &image.Auth{User: "alice", Password: "s3cret"}, nil, true},
		{"stored login", nil, creds{reg.Host: {"alice", "s3cret"}}, true},
		{"stored login for another host", nil, creds{"other:5000": {"alice", "s3cret"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := image.Options{Insecure: []string{reg.Host}}
			if tc.store != nil {
				o.Credentials = tc.store
			}
			s := open(t, filepath.Join(t.TempDir(), "images"), o)
			_, err := s.Pull(ctx, reg.Ref("private:1"), image.PullOptions{Auth: tc.auth})
			if tc.ok != (err == nil) {
				t.Fatalf("pull: %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "UNAUTHORIZED") && !strings.Contains(err.Error(), "401") {
				t.Errorf("error does not say unauthorized: %v", err)
			}
		})
	}
}

func TestPlainHTTPOnlyWhenNamed(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	imagetest.Push(t, reg.Ref("plain:1"), imagetest.Image(t, v1.Config{}, imagetest.Layer(t, imagetest.File("x", "y"))))
	s := open(t, filepath.Join(t.TempDir(), "images"), image.Options{})
	_, err := s.Pull(context.Background(), reg.Ref("plain:1"), image.PullOptions{})
	if err == nil || !strings.Contains(err.Error(), "--insecure-registry "+reg.Host) {
		t.Fatalf("plain HTTP registry not named insecure: %v", err)
	}
	s = open(t, filepath.Join(t.TempDir(), "images"), image.Options{Insecure: []string{"127.0.0.1"}})
	if _, err := s.Pull(context.Background(), reg.Ref("plain:1"), image.PullOptions{}); err != nil {
		t.Fatalf("named by host: %v", err)
	}
}

func TestHTTPSRegistry(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{TLS: true})
	imagetest.Push(t, reg.Ref("tls:1"), imagetest.Image(t, v1.Config{}, imagetest.Layer(t, imagetest.File("x", "y"))),
		imagetest.HTTPS(reg.Client().Transport))
	s := open(t, filepath.Join(t.TempDir(), "images"), image.Options{RootCAs: reg.Certs()})
	if _, err := s.Pull(context.Background(), reg.Ref("tls:1"), image.PullOptions{}); err != nil {
		t.Fatalf("HTTPS with the test CA: %v", err)
	}
	s = open(t, filepath.Join(t.TempDir(), "images"), image.Options{})
	_, err := s.Pull(context.Background(), reg.Ref("tls:1"), image.PullOptions{})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("HTTPS without trusting the CA: %v", err)
	}
}

func TestConcurrentPullsDownloadOnce(t *testing.T) {
	count := registrytest.NewCountBlobGets()
	reg := registrytest.Start(t, registrytest.Options{Wrap: count.Wrap})
	l := imagetest.Layer(t, imagetest.File("data", strings.Repeat("x", 1<<20)))
	imagetest.Push(t, reg.Ref("conc:1"), imagetest.Image(t, v1.Config{}, l))
	s := newStore(t, reg)
	var wg sync.WaitGroup
	digests := make([]string, 8)
	errs := make([]error, 8)
	for i := range digests {
		wg.Go(func() {
			im, err := s.Pull(context.Background(), reg.Ref("conc:1"), image.PullOptions{})
			errs[i] = err
			if err == nil {
				digests[i] = im.Digest
			}
		})
	}
	wg.Wait()
	for i := range digests {
		if errs[i] != nil || digests[i] != digests[0] {
			t.Fatalf("pull %d: %s %v", i, digests[i], errs[i])
		}
	}
	ld, _ := l.Digest()
	if n := count.Get(ld.String()); n != 1 {
		t.Fatalf("the layer was fetched %d times, want 1", n)
	}
}

func TestLoadLayout(t *testing.T) {
	dir := t.TempDir()
	img := imagetest.Image(t, v1.Config{Entrypoint: []string{"/bin/x"}}, imagetest.Layer(t, imagetest.File("bin/x", "#!")))
	imagetest.WriteLayout(t, filepath.Join(dir, "layout"), img)
	s := open(t, filepath.Join(dir, "images"), image.Options{})
	im, err := s.Load(context.Background(), filepath.Join(dir, "layout"), "berth.local/tool:1")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	if im.Digest != want.String() || im.Ref != "berth.local/tool:1" || im.Config.Entrypoint[0] != "/bin/x" {
		t.Fatalf("%+v", im)
	}
	if _, err := os.Stat(filepath.Join(im.RootFS, "bin/x")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(context.Background(), t.TempDir(), "berth.local/none:1"); err == nil {
		t.Fatal("an empty directory loaded")
	}
}

func TestPrune(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	s := newStore(t, reg)
	base := imagetest.Layer(t, imagetest.File("base", strings.Repeat("b", 300_000)))
	a := imagetest.Image(t, v1.Config{}, base, imagetest.Layer(t, imagetest.File("a", "a")))
	b := imagetest.Image(t, v1.Config{}, base, imagetest.Layer(t, imagetest.File("b", strings.Repeat("c", 200_000))))
	imagetest.Push(t, reg.Ref("a:1"), a)
	imagetest.Push(t, reg.Ref("b:1"), b)
	ctx := context.Background()
	ia, err := s.Pull(ctx, reg.Ref("a:1"), image.PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ib, err := s.Pull(ctx, reg.Ref("b:1"), image.PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	freed, err := s.Prune(ctx, func(d string) bool { return d == ia.Digest })
	if err != nil {
		t.Fatal(err)
	}
	if freed < ib.Size {
		t.Fatalf("freed %d, want at least %d", freed, ib.Size)
	}
	if _, err := s.Get(ib.Digest); !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("b still there: %v", err)
	}
	if _, err := os.Stat(ib.RootFS); !os.IsNotExist(err) {
		t.Fatalf("b's root still there: %v", err)
	}
	if _, err := s.Get(ia.Digest); err != nil {
		t.Fatal(err)
	}
	bd, _ := base.Digest()
	if _, err := os.Stat(filepath.Join(s.Dir(), "blobs/sha256", bd.Hex)); err != nil {
		t.Fatalf("a's base layer was removed: %v", err)
	}
	if _, err := s.Prune(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"blobs/sha256", "rootfs/sha256", "meta/sha256"} {
		if ents, _ := os.ReadDir(filepath.Join(s.Dir(), d)); len(ents) != 0 {
			t.Errorf("%s not empty after pruning all: %d entries", d, len(ents))
		}
	}
}

func TestProgress(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	s := newStore(t, reg)
	l := imagetest.Layer(t, imagetest.File("data", strings.Repeat("p", 100_000)))
	imagetest.Push(t, reg.Ref("prog:1"), imagetest.Image(t, v1.Config{}, l))
	var seen []image.Progress
	_, err := s.Pull(context.Background(), reg.Ref("prog:1"), image.PullOptions{Progress: func(p image.Progress) { seen = append(seen, p) }})
	if err != nil {
		t.Fatal(err)
	}
	ld, _ := l.Digest()
	size, _ := l.Size()
	var downloaded, unpacked bool
	for _, p := range seen {
		if p.Layer != ld.String() || p.Total != size {
			t.Fatalf("progress %+v", p)
		}
		downloaded = downloaded || p.Status == "downloaded" && p.Done == size
		unpacked = unpacked || p.Status == "unpacked"
	}
	if !downloaded || !unpacked {
		t.Fatalf("progress %+v", seen)
	}
	_ = io.EOF
}

func TestLoadCorruptBlobFails(t *testing.T) {
	dir := t.TempDir()
	l := imagetest.Layer(t, imagetest.File("data", strings.Repeat("z", 50_000)))
	imagetest.WriteLayout(t, filepath.Join(dir, "layout"), imagetest.Image(t, v1.Config{}, l))
	d, _ := l.Digest()
	blob := filepath.Join(dir, "layout/blobs/sha256", d.Hex)
	b, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(blob, b, 0o644); err != nil {
		t.Fatal(err)
	}
	s := open(t, filepath.Join(dir, "images"), image.Options{})
	_, err = s.Load(context.Background(), filepath.Join(dir, "layout"), "berth.local/bad:1")
	if err == nil || !strings.Contains(err.Error(), "does not match its digest") {
		t.Fatalf("a corrupted layout blob: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "blobs/sha256", d.Hex)); !os.IsNotExist(err) {
		t.Fatalf("the corrupted blob was stored: %v", err)
	}
}
