package local

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/berth-dev/berth/sandbox"
)

// TestAdopt: a tree of the caller's files (root's, readable by all) is
// made the sandbox uid's own and private to it; links are not followed.
func TestAdopt(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown)")
	}
	const uid = 901235
	dir := filepath.Join(t.TempDir(), "app--r1")
	mkdirMode(t, dir, 0o755)
	writeMode(t, filepath.Join(dir, "secret"), 0o644)
	mkdirMode(t, filepath.Join(dir, "bin"), 0o755)
	writeMode(t, filepath.Join(dir, "bin", "tool"), 0o755)
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := Adopt(dir, uid); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]fs.FileMode{
		".": fs.ModeDir | 0o700, "secret": 0o600, "bin": fs.ModeDir | 0o700, "bin/tool": 0o700, "link": fs.ModeSymlink | 0o777,
	} {
		info, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st := info.Sys().(*syscall.Stat_t); st.Uid != uid || info.Mode() != want {
			t.Errorf("%s: owner %d, mode %v; want %d, %v", name, st.Uid, info.Mode(), uid, want)
		}
	}
	if info, _ := os.Stat("/etc/passwd"); info.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatal("the link was followed")
	}
}

// TestBinds: a group's volumes are directories of its own, private to the
// group's uid, shared by its sandboxes and by nobody else's; bad names
// are refused.
func TestBinds(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown)")
	}
	h := &Host{Instance: "t", VolumeDir: filepath.Join(t.TempDir(), "volumes"), uidBase: 1_000_000}
	spec := func(group string, vols ...string) sandbox.Spec {
		s := sandbox.Spec{Group: group}
		for _, v := range vols {
			s.Volumes = append(s.Volumes, sandbox.Volume{Name: v, Path: "/" + v})
		}
		return s
	}
	ua, ub := h.GroupUID("app/a"), h.GroupUID("app/b")
	if ua == ub || ua != h.GroupUID("app/a") || ua < groupUIDBase || ua >= 1_000_000 {
		t.Fatalf("group uids %d %d", ua, ub)
	}
	if h.SandboxUID(sandbox.Spec{}, 3) != 1_000_003 || h.SandboxUID(spec("app/a"), 3) != ua {
		t.Fatal("SandboxUID")
	}
	a1, err := h.Binds(spec("app/a", "data"), ua)
	if err != nil {
		t.Fatal(err)
	}
	a2, _ := h.Binds(spec("app/a", "data"), ua)
	b, _ := h.Binds(spec("app/b", "data"), ub)
	if len(a1) != 1 || a1[0] != a2[0] || a1[0].Source == b[0].Source || a1[0].Target != "/data" || a1[0].ReadOnly {
		t.Fatalf("binds %+v %+v %+v", a1, a2, b)
	}
	info, err := os.Stat(a1[0].Source)
	if err != nil || info.Sys().(*syscall.Stat_t).Uid != ua || info.Mode().Perm() != 0o700 {
		t.Fatalf("volume %v %v", info, err)
	}
	for _, bad := range []sandbox.Spec{spec("", "data"), spec("app/a", "../x"), spec("../a", "data"), spec("app/a", "Data")} {
		if _, err := h.Binds(bad, ua); err == nil {
			t.Errorf("%+v: accepted", bad)
		}
	}
	if err := h.RemoveVolumes("app/a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(a1[0].Source); err == nil {
		t.Error("volume left after RemoveVolumes")
	}
	if _, err := os.Stat(b[0].Source); err != nil {
		t.Error("another group's volume went too")
	}
}

func writeMode(t *testing.T, p string, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(p, []byte("data"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func mkdirMode(t *testing.T, p string, mode fs.FileMode) {
	t.Helper()
	if err := os.Mkdir(p, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}
