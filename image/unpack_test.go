package image_test

import (
	"archive/tar"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/image"
	it "github.com/berth-dev/berth/internal/imagetest"
	"github.com/berth-dev/berth/internal/registrytest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// tree lists a root: path, type and, for files, content and link count.
func tree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	skip := map[string]bool{"proc": true, "dev": true, "sys": true, "tmp": true, "run": true, "etc": true, "mnt": true, "mnt/data": true, ".berth": true,
		"etc/resolv.conf": true, "etc/hosts": true, "etc/hostname": true}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if skip[rel] {
			return nil
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			out = append(out, rel+" -> "+l)
		case fi.IsDir():
			out = append(out, rel+"/")
		default:
			b, _ := os.ReadFile(p)
			out = append(out, rel+"="+string(b)+nlink(fi))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func nlink(fi os.FileInfo) string {
	if n := fi.Sys().(*syscall.Stat_t).Nlink; n > 1 {
		return " (" + strings.Repeat("*", int(n)) + ")"
	}
	return ""
}

func TestLayersApplied(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	s := newStore(t, reg)
	lower := it.Layer(t,
		it.File("keep", "k"), it.File("gone", "g"), it.Dir("dir"), it.File("dir/a", "a"), it.File("dir/b", "b"),
		it.Dir("opq"), it.File("opq/old", "o"), it.Dir("opq/sub"), it.File("opq/sub/old", "o"),
		it.Dir("late"), it.File("late/old", "o"),
		it.File("target", "t"), it.Dir("lib"), it.Symlink("lib64", "lib"), it.File("file2dir", "f"), it.Dir("dir2file"),
	)
	upper := it.Layer(t,
		it.Whiteout("gone"), it.Whiteout("dir/a"),
		it.Opaque("opq"), it.File("opq/new", "n"),
		// the opaque marker after the layer's own new entries must not remove them
		it.File("late/new", "n"), it.Dir("late/newdir"), it.File("late/newdir/x", "x"), it.Opaque("late"),
		it.Hardlink("hard", "target"), it.Hardlink("hardlower", "keep"),
		it.Symlink("rel", "dir/b"), it.Symlink("abs", "/keep"),
		it.File("lib64/through", "via symlink"),
		it.Dir("file2dir"), it.File("dir2file", "now a file"),
	)
	imagetest := it.Image(t, v1.Config{}, lower, upper)
	it.Push(t, reg.Ref("layers:1"), imagetest)
	im, err := s.Pull(context.Background(), reg.Ref("layers:1"), image.PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"abs -> /keep", "dir/", "dir/b=b", "dir2file=now a file", "file2dir/", "hard=t (**)", "hardlower=k (**)",
		"keep=k (**)", "late/", "late/new=n", "late/newdir/", "late/newdir/x=x", "lib/", "lib/through=via symlink",
		"lib64 -> lib", "opq/", "opq/new=n", "rel -> dir/b", "target=t (**)",
	}
	got := tree(t, im.RootFS)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("tree:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// canaryStore is a registry, a store, and an empty directory beside the
// store that no pull may write to.
func canaryStore(t *testing.T) (*registrytest.Registry, *image.Store, string) {
	reg := registrytest.Start(t, registrytest.Options{})
	base := t.TempDir()
	canary := filepath.Join(base, "canary")
	if err := os.Mkdir(canary, 0o755); err != nil {
		t.Fatal(err)
	}
	return reg, open(t, filepath.Join(base, "images"), image.Options{Insecure: []string{reg.Host}}), canary
}

func TestHostileLayers(t *testing.T) {
	reg, s, canary := canaryStore(t)
	up := strings.Repeat("../", 12)
	for _, tc := range []struct {
		name    string
		entries []it.Entry
		err     string
	}{
		{"dotdot", []it.Entry{it.File(up+canary[1:]+"/pwned", "x")}, `name leaves the archive's root (..)`},
		{"dotdot inside", []it.Entry{it.Dir("a"), it.File("a/../../pwned", "x")}, `name leaves the archive's root (..)`},
		{"absolute", []it.Entry{it.File(canary+"/pwned", "x")}, `absolute name`},
		{"hard link to outside", []it.Entry{it.Hardlink("hl", up+"etc/passwd")}, `hard link target`},
		{"hard link through a symlink", []it.Entry{it.Symlink("etc2", "/etc"), it.Hardlink("hl", "etc2/passwd")}, `path escapes from parent`},
		{"whiteout through a symlink", []it.Entry{it.Symlink("esc", canary), it.Whiteout("esc/keep")}, `path escapes from parent`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(canary, "keep"), []byte("k"), 0o644); err != nil {
				t.Fatal(err)
			}
			ref := reg.Ref("hostile:" + strings.ReplaceAll(tc.name, " ", "-"))
			it.Push(t, ref, it.Image(t, v1.Config{}, it.Layer(t, it.File("ok", "fine")), it.Layer(t, tc.entries...)))
			_, err := s.Pull(context.Background(), ref, image.PullOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "layer 1 (sha256:") || !strings.Contains(err.Error(), "entry ") {
				t.Fatalf("error %v, want one naming layer 1, the entry and %q", err, tc.err)
			}
			t.Logf("%v", err)
			ents, _ := os.ReadDir(canary)
			if len(ents) != 1 || ents[0].Name() != "keep" {
				t.Fatalf("something was written or removed outside the root: %v", ents)
			}
			if fi, err := os.Stat("/etc/passwd"); err != nil || fi.Sys().(*syscall.Stat_t).Nlink != 1 {
				t.Fatalf("/etc/passwd gained a link")
			}
			for _, d := range []string{"rootfs/sha256", "tmp"} {
				if ents, _ := os.ReadDir(filepath.Join(s.Dir(), d)); len(ents) != 0 {
					t.Errorf("%s not empty after a failed pull: %v", d, ents)
				}
			}
		})
	}
}

// TestSymlinksFollowedInsideRoot: an entry under a symbolic link is
// written where the link leads inside the image, as in a chroot (Docker
// applies layers so: Debian's var/run -> /run), never outside it.
func TestSymlinksFollowedInsideRoot(t *testing.T) {
	reg, s, canary := canaryStore(t)
	up := strings.Repeat("../", 12)
	for _, tc := range []struct {
		name    string
		entries []it.Entry
		inside  string // where the last entry lands, in the root
	}{
		{"debian var-run", []it.Entry{it.Dir("run"), it.Dir("var"), it.Symlink("var/run", "/run"), it.File("var/run/x.pid", "1")}, "run/x.pid"},
		{"absolute symlink then write", []it.Entry{it.Symlink("esc", canary), it.File("esc/pwned", "x")}, canary[1:] + "/pwned"},
		{"absolute symlink then dir", []it.Entry{it.Symlink("esc", canary), it.Dir("esc/sub")}, canary[1:] + "/sub"},
		{"relative symlink then write", []it.Entry{it.Symlink("esc", up+canary[1:]), it.File("esc/pwned", "x")}, canary[1:] + "/pwned"},
		{"symlink to parent then write", []it.Entry{it.Dir("d"), it.Symlink("d/up", "../.."), it.File("d/up/pwned", "x")}, "pwned"},
		{"chain of links", []it.Entry{it.Symlink("a", "/b"), it.Symlink("b", "c/../d"), it.Dir("d"), it.File("a/f", "x")}, "d/f"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := reg.Ref("links:" + strings.ReplaceAll(tc.name, " ", "-"))
			it.Push(t, ref, it.Image(t, v1.Config{}, it.Layer(t, it.File("ok", "fine")), it.Layer(t, tc.entries...)))
			im, err := s.Pull(context.Background(), ref, image.PullOptions{})
			if err != nil {
				t.Fatalf("pull: %v", err)
			}
			if _, err := os.Lstat(filepath.Join(im.RootFS, tc.inside)); err != nil {
				t.Errorf("not written inside the root at %s: %v", tc.inside, err)
			}
			if ents, _ := os.ReadDir(canary); len(ents) != 0 {
				t.Fatalf("something was written outside the root: %v", ents)
			}
		})
	}
	loop := reg.Ref("links:loop")
	it.Push(t, loop, it.Image(t, v1.Config{}, it.Layer(t, it.Symlink("l1", "l2"), it.Symlink("l2", "l1"), it.File("l1/f", "x"))))
	if _, err := s.Pull(context.Background(), loop, image.PullOptions{}); err == nil || !strings.Contains(err.Error(), "too many levels of symbolic links") {
		t.Fatalf("a symlink loop: %v", err)
	}
}

func TestDevicesSkippedSetuidStripped(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	s := newStore(t, reg)
	dev := it.Entry{Header: tar.Header{Typeflag: tar.TypeChar, Name: "dev/mem", Devmajor: 1, Devminor: 1, Mode: 0o666, ModTime: time.Unix(1, 0)}}
	fifo := it.Entry{Header: tar.Header{Typeflag: tar.TypeFifo, Name: "fifo", Mode: 0o666, ModTime: time.Unix(1, 0)}}
	suid := it.Mode(it.File("bin/su", "#!"), 0o4755)
	sgid := it.Mode(it.File("bin/sg", "#!"), 0o2755)
	sticky := it.Mode(it.Dir("shared"), 0o1777)
	it.Push(t, reg.Ref("special:1"), it.Image(t, v1.Config{}, it.Layer(t, it.Dir("dev"), dev, fifo, suid, sgid, sticky)))
	im, err := s.Pull(context.Background(), reg.Ref("special:1"), image.PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"dev/mem", "fifo"} {
		if _, err := os.Lstat(filepath.Join(im.RootFS, p)); !os.IsNotExist(err) {
			t.Errorf("%s exists: %v", p, err)
		}
	}
	for _, p := range []string{"bin/su", "bin/sg"} {
		fi, err := os.Stat(filepath.Join(im.RootFS, p))
		if err != nil || fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: mode %v %v", p, fi.Mode(), err)
		}
	}
	if fi, err := os.Stat(filepath.Join(im.RootFS, "shared")); err != nil || fi.Mode()&os.ModeSticky == 0 {
		t.Errorf("sticky bit lost: %v", err)
	}
}

// TestKilledPullLeavesNothingUsed kills a pull (in a child process) half-way
// through a download, then checks that Open cleans up and a new pull works.
func TestKilledPullLeavesNothingUsed(t *testing.T) {
	if os.Getenv("IMAGE_CHILD_PULL") != "" {
		return
	}
	slow := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") && r.Header.Get("X-Slow") == "" {
				next.ServeHTTP(&slowWriter{ResponseWriter: w}, r)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	var slowOn atomicBool
	slowOn.set(true)
	reg := registrytest.Start(t, registrytest.Options{Wrap: func(h http.Handler) http.Handler {
		s := slow(h)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if slowOn.get() {
				s.ServeHTTP(w, r)
				return
			}
			h.ServeHTTP(w, r)
		})
	}})
	big := make([]byte, 4<<20)
	for i := range big {
		big[i] = byte(i*7 + i/13)
	}
	it.Push(t, reg.Ref("slow:1"), it.Image(t, v1.Config{}, it.Layer(t, it.File("big", string(big))), it.Layer(t, it.File("small", "s"))))
	dir := filepath.Join(t.TempDir(), "images")
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildPull$", "-test.v")
	cmd.Env = append(os.Environ(), "IMAGE_CHILD_PULL="+reg.Ref("slow:1"), "IMAGE_CHILD_DIR="+dir, "IMAGE_CHILD_INSECURE="+reg.Host)
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ents, _ := os.ReadDir(filepath.Join(dir, "tmp"))
		partial := false
		for _, e := range ents {
			if fi, err := e.Info(); err == nil && strings.Contains(e.Name(), ".blob-") && fi.Size() > 0 {
				partial = true
			}
		}
		if partial {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("the child never started downloading:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) == 0 {
		t.Fatal("the killed pull left nothing to clean up: the test does not test anything")
	}
	// And what an unpack killed half-way would leave.
	hex := strings.Repeat("ab", 32)
	if err := os.MkdirAll(filepath.Join(dir, "tmp", hex+".rootfs", "usr/bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	slowOn.set(false)
	s := open(t, dir, image.Options{Insecure: []string{reg.Host}})
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Fatalf("Open left %d entries in tmp", len(ents))
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "rootfs/sha256")); len(ents) != 0 {
		t.Fatalf("a root exists after a killed pull")
	}
	im, err := s.Pull(context.Background(), reg.Ref("slow:1"), image.PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(im.RootFS, "big"))
	if err != nil || string(b) != string(big) {
		t.Fatalf("big file wrong after the re-pull: %d bytes, %v", len(b), err)
	}
}

// TestChildPull is the child of TestKilledPullLeavesNothingUsed.
func TestChildPull(t *testing.T) {
	ref := os.Getenv("IMAGE_CHILD_PULL")
	if ref == "" {
		t.Skip("only run as a child process")
	}
	s := open(t, os.Getenv("IMAGE_CHILD_DIR"), image.Options{Insecure: []string{os.Getenv("IMAGE_CHILD_INSECURE")}})
	_, err := s.Pull(context.Background(), ref, image.PullOptions{})
	t.Fatalf("the pull should have been killed; it ended: %v", err)
}

type slowWriter struct {
	http.ResponseWriter
}

func (w *slowWriter) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		k := min(len(b), 16<<10)
		m, err := w.ResponseWriter.Write(b[:k])
		n += m
		if err != nil {
			return n, err
		}
		if f, ok := w.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		b = b[k:]
		time.Sleep(50 * time.Millisecond)
	}
	return n, nil
}

type atomicBool struct{ v atomic.Bool }

func (a *atomicBool) set(b bool) { a.v.Store(b) }
func (a *atomicBool) get() bool  { return a.v.Load() }

// TestUnlistedParentsOwnedByImageRoot: a layer need not list an entry's
// parents; the ones the unpack makes belong to image root (shifted), as
// listed ones do, never to host root.
func TestUnlistedParentsOwnedByImageRoot(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	s := newStore(t, reg)
	it.Push(t, reg.Ref("parents:1"), it.Image(t, v1.Config{}, it.Layer(t, it.File("etc/app/conf", "c"), it.Owned(it.Dir("listed"), 0, 0))))
	im, err := s.Pull(context.Background(), reg.Ref("parents:1"), image.PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var listed syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(im.RootFS, "listed"), &listed); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"etc", "etc/app"} {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(im.RootFS, d), &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != listed.Uid || st.Gid != listed.Gid || st.Uid == 0 {
			t.Errorf("/%s is owned by %d:%d, want image root's %d:%d", d, st.Uid, st.Gid, listed.Uid, listed.Gid)
		}
	}
}

// TestKeepOwner: a store with KeepOwner (a non-root Berth whose sandboxes
// are Pods) leaves every file as its own user's, shifts nothing, and still
// reads the image's user from its /etc/passwd.
func TestKeepOwner(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	s := open(t, filepath.Join(t.TempDir(), "images"), image.Options{Insecure: []string{reg.Host}, IDShift: shift, KeepOwner: true})
	it.Push(t, reg.Ref("owned:1"), it.Image(t, v1.Config{User: "app", WorkingDir: "/home/app"}, it.Layer(t,
		it.File("etc/passwd", "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"),
		it.Owned(it.Dir("home/app"), 1000, 1000), it.Owned(it.File("home/app/data", "d"), 1000, 1000), it.Symlink("link", "home"))))
	im, err := s.Pull(context.Background(), reg.Ref("owned:1"), image.PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if im.Config.UID != 1000 || im.Config.GID != 1000 {
		t.Errorf("image user %d:%d, want 1000:1000", im.Config.UID, im.Config.GID)
	}
	err = filepath.Walk(im.RootFS, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != os.Getuid() || int(st.Gid) != os.Getgid() {
			t.Errorf("%s is owned by %d:%d, want Berth's own %d:%d", p, st.Uid, st.Gid, os.Getuid(), os.Getgid())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
