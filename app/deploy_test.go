package app

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/berth-dev/berth/internal/archive"
)

// packUnpack is what a deploy does to a directory: the CLI packs it, the
// server unpacks it as uid's (root's: the sandbox runtime then hands the
// files to the app's sandboxes, see sandbox.Files).
func packUnpack(ctx context.Context, src, dst string, uid int) error {
	var buf bytes.Buffer
	if err := archive.Pack(ctx, &buf, src, archive.PackOptions{}); err != nil {
		return err
	}
	_, err := archive.Unpack(ctx, &buf, dst, archive.Owner{UID: uid, GID: uid}, archive.Limits{})
	return err
}

// TestRevisionFiles: a directory, packed by the CLI and unpacked for a
// revision, is root's alone, with the owner's permission bits plus read;
// symlinks stay symlinks; special files are left out.
func TestRevisionFiles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown)")
	}
	const uid = 0 // what the server unpacks for
	type entry struct {
		mode fs.FileMode // of the copy; 0 for a symlink
		link string      // a symlink's target
	}
	tests := []struct {
		name    string
		make    func(t *testing.T, src string)
		want    map[string]entry
		wantErr string
	}{{
		name: "modes",
		make: func(t *testing.T, src string) {
			write(t, filepath.Join(src, "secret"), 0o600)
			write(t, filepath.Join(src, "public"), 0o644)
			write(t, filepath.Join(src, "tool"), 0o755)
			write(t, filepath.Join(src, "writeonly"), 0o200)
			mkdir(t, filepath.Join(src, "sub"), 0o777)
			write(t, filepath.Join(src, "sub", "x"), 0o666)
		},
		want: map[string]entry{
			"secret": {mode: 0o600}, "public": {mode: 0o600}, "tool": {mode: 0o700},
			"writeonly": {mode: 0o600}, "sub": {mode: fs.ModeDir | 0o700}, "sub/x": {mode: 0o600},
		},
	}, {
		name: "symlinks stay symlinks",
		make: func(t *testing.T, src string) {
			symlink(t, "/etc/shadow", filepath.Join(src, "shadow"))
			symlink(t, "../../..", filepath.Join(src, "up"))
			symlink(t, "/etc", filepath.Join(src, "etcdir"))
		},
		want: map[string]entry{
			"shadow": {link: "/etc/shadow"}, "up": {link: "../../.."}, "etcdir": {link: "/etc"},
		},
	}, {
		name: "fifo skipped",
		make: func(t *testing.T, src string) {
			if err := syscall.Mkfifo(filepath.Join(src, "pipe"), 0o644); err != nil {
				t.Fatal(err)
			}
		},
		want: map[string]entry{},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src, dst := t.TempDir(), t.TempDir()
			tc.make(t, src)
			err := packUnpack(context.Background(), src, dst, uid)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for name, want := range tc.want {
				info, err := os.Lstat(filepath.Join(dst, name))
				if err != nil {
					t.Fatal(err)
				}
				if st := info.Sys().(*syscall.Stat_t); st.Uid != uid || st.Gid != uid {
					t.Errorf("%s: owner %d:%d, want %d", name, st.Uid, st.Gid, uid)
				}
				if want.link != "" {
					if got, err := os.Readlink(filepath.Join(dst, name)); err != nil || got != want.link {
						t.Errorf("%s: link %q %v, want %q", name, got, err, want.link)
					}
					continue
				}
				if info.Mode() != want.mode {
					t.Errorf("%s: mode %v, want %v", name, info.Mode(), want.mode)
				}
			}
			// Nothing else: no directory behind a link was copied.
			n := -1
			_ = filepath.WalkDir(dst, func(string, fs.DirEntry, error) error { n++; return nil })
			if n != len(tc.want) {
				t.Errorf("%d entries copied, want %d", n, len(tc.want))
			}
		})
	}
}

func write(t *testing.T, p string, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(p, []byte("data"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, p string, mode fs.FileMode) {
	t.Helper()
	if err := os.Mkdir(p, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, p string) {
	t.Helper()
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}
