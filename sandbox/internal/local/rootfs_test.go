package local

import (
	"os"
	"path/filepath"
	"testing"
)

// The host makes mount points and /etc files in an image's root: a link
// of the image's in the way is replaced, never followed.
func TestEnsureReplacesLinks(t *testing.T) {
	dir, canary := t.TempDir(), t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"mnt":       canary,
		"etc/hosts": filepath.Join(canary, "hosts"),
		"tmp":       "../../../../../../../../" + canary,
		"proc":      "/proc",
	} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	for _, c := range []struct {
		path    string
		file    bool
		content []byte
	}{
		{"/mnt/data", false, nil}, {"/tmp", false, nil}, {"/proc", false, nil},
		{"/etc/hosts", true, []byte("127.0.0.1 localhost\n")}, {"/.berth/agent", true, nil},
	} {
		if err := ensure(root, c.path, c.file, c.content); err != nil {
			t.Fatalf("%s: %v", c.path, err)
		}
		st, err := os.Lstat(filepath.Join(dir, c.path))
		if err != nil || st.IsDir() == c.file || st.Mode()&os.ModeSymlink != 0 {
			t.Errorf("%s: %v %v", c.path, st.Mode(), err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "etc/hosts")); err != nil || string(b) != "127.0.0.1 localhost\n" {
		t.Errorf("etc/hosts: %q %v", b, err)
	}
	if entries, _ := os.ReadDir(canary); len(entries) != 0 {
		t.Errorf("a write followed a link out of the root: %v", entries)
	}
}
