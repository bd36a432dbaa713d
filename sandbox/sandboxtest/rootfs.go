package sandboxtest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/internal/testutil"
	"github.com/berth-dev/berth/sandbox"
)

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

// ImageUID is the image user of the test images ("app", 1000:1000).
const ImageUID = 1000

// ScratchRoot builds an image root with no shell and no libraries, as the
// image store unpacks one (every owner shifted by sandbox.ImageIDShift):
// /app and /app/owned owned by the image user, /app/berth (a static
// program: the berth binary), /etc/passwd and /etc/group naming the user,
// a root-owned /etc. It returns a Root that runs as that user.
func ScratchRoot(tb testing.TB) *sandbox.Root {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "rootfs")
	const shift = sandbox.ImageIDShift
	files := []struct {
		path    string
		mode    os.FileMode
		uid     int
		content string
	}{
		{"", 0o755 | fs.ModeDir, 0, ""},
		{"etc", 0o755 | fs.ModeDir, 0, ""},
		{"etc/passwd", 0o644, 0, "root:x:0:0:root:/root:/sbin/nologin\napp:x:1000:1000::/app:/sbin/nologin\n"},
		{"etc/group", 0o644, 0, "root:x:0:\napp:x:1000:\n"},
		{"app", 0o755 | fs.ModeDir, ImageUID, ""},
		{"app/owned", 0o644, ImageUID, "image file\n"},
		{"root-only", 0o644, 0, "root's\n"},
		{"app/berth", 0o755, 0, ""},
	}
	for _, f := range files {
		p := filepath.Join(dir, f.path)
		var err error
		switch {
		case f.mode.IsDir():
			err = os.MkdirAll(p, f.mode.Perm())
		case f.path == "app/berth":
			err = copyFile(testutil.BerthBinary(tb), p)
		default:
			err = os.WriteFile(p, []byte(f.content), f.mode.Perm())
		}
		if err == nil {
			err = os.Chmod(p, f.mode.Perm())
		}
		if err == nil {
			err = os.Lchown(p, shift+f.uid, shift+f.uid)
		}
		if err != nil {
			tb.Fatal(err)
		}
	}
	// Links where the runtime needs mount points and /etc files: the host
	// must replace them, never follow them.
	for link, target := range map[string]string{"mnt": "/", "etc/hosts": "/etc/shadow", "tmp": "../../../../../../"} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			tb.Fatal(err)
		}
		if err := os.Lchown(filepath.Join(dir, link), shift, shift); err != nil {
			tb.Fatal(err)
		}
	}
	return &sandbox.Root{Dir: dir, IDShift: shift, UID: ImageUID, GID: ImageUID}
}

// debianPackages are the test Debian image's packages beyond apt's
// variant: what the pool agent's shell and Python need.
var debianPackages = []string{"bash", "python3"}

var (
	debianOnce sync.Once
	debianDir  string
	debianErr  error
)

// DebianRoot returns a Debian bookworm image root with bash and python3,
// built once with mmdebstrap from the host's apt sources and cached under
// /var/cache/berth-test (keyed on its packages and the id shift), shifted
// as the image store shifts: an "app" user (1000) with /home/app, and
// /usr/local/bin/suid-id, a setuid-root copy of id. Tests must not write
// into it.
func DebianRoot(tb testing.TB) *sandbox.Root {
	tb.Helper()
	debianOnce.Do(func() { debianDir, debianErr = buildDebian() })
	if debianErr != nil {
		tb.Fatal(debianErr)
	}
	return &sandbox.Root{Dir: debianDir, IDShift: sandbox.ImageIDShift, UID: ImageUID, GID: ImageUID}
}

func buildDebian() (string, error) {
	key := sha256.Sum256(fmt.Appendf(nil, "bookworm apt %s shift=%d v1", strings.Join(debianPackages, ","), sandbox.ImageIDShift))
	cache := "/var/cache/berth-test"
	dir := filepath.Join(cache, "debian-"+hex.EncodeToString(key[:6]))
	if _, err := os.Stat(filepath.Join(dir, "usr/bin/python3")); err == nil {
		return dir, nil
	}
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		return "", fmt.Errorf("mmdebstrap is not installed; run scripts/setup.sh --test")
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	tmp := dir + ".tmp"
	_ = os.RemoveAll(tmp)
	cmd := exec.Command("unshare", "--mount", "--propagation", "private",
		"mmdebstrap", "--variant=apt", "--mode=root", "--include="+strings.Join(debianPackages, ","),
		"--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/locale/*",
		"--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/info/*",
		`--aptopt=Acquire::Languages "none"`,
		`--customize-hook=rm -rf "$1"/etc/resolv.conf "$1"/etc/hostname "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin`,
		`--customize-hook=chroot "$1" useradd -u 1000 -m -s /bin/bash app`,
		`--customize-hook=cp "$1"/usr/bin/id "$1"/usr/local/bin/suid-id && chmod 4755 "$1"/usr/local/bin/suid-id`,
		`--customize-hook=echo image file > "$1"/home/app/owned && chown 1000:1000 "$1"/home/app/owned`,
		"bookworm", tmp, "/etc/apt/sources.list.d/debian.sources")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("mmdebstrap: %v\n%s", err, out)
	}
	if err := Shift(tmp, sandbox.ImageIDShift); err != nil {
		return "", err
	}
	return dir, os.Rename(tmp, dir)
}

// Shift adds shift to the owner and group of every file under dir, as the
// image store does when it unpacks, keeping setuid and setgid bits.
func Shift(dir string, shift uint32) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		if err := os.Lchown(p, int(shift+st.Uid), int(shift+st.Gid)); err != nil {
			return err
		}
		if info.Mode()&(fs.ModeSetuid|fs.ModeSetgid) != 0 && info.Mode()&fs.ModeSymlink == 0 {
			return os.Chmod(p, info.Mode()) // chown cleared them
		}
		return nil
	})
}

// treeState describes every file under dir (path, mode, owner, size,
// mtime), to tell whether anything changed it.
func treeState(tb testing.TB, dir string) string {
	tb.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		fmt.Fprintf(&b, "%s %v %d:%d %d %d\n", p, info.Mode(), st.Uid, st.Gid, info.Size(), info.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return b.String()
}

// DebianLayer is DebianRoot as one OCI layer (owned by root, without
// /dev), packed once by tar and gzip and cached next to the root: the base
// of the tests' Debian images.
func DebianLayer(tb testing.TB) v1.Layer {
	tb.Helper()
	root := DebianRoot(tb).Dir
	layerFile := root + ".layer.tar.gz"
	if _, err := os.Stat(layerFile); err != nil {
		tmp := fmt.Sprintf("%s.%d.tmp", layerFile, os.Getpid())
		cmd := exec.Command("sh", "-c", `tar -C "$1" --numeric-owner --owner=0 --group=0 --exclude=./dev/* -cf - . | gzip -1 > "$2"`, "sh", root, tmp)
		if out, err := cmd.CombinedOutput(); err != nil {
			tb.Fatalf("pack the Debian root: %v\n%s", err, out)
		}
		if err := os.Rename(tmp, layerFile); err != nil {
			tb.Fatal(err)
		}
	}
	layer, err := tarball.LayerFromFile(layerFile, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		tb.Fatal(err)
	}
	return layer
}
