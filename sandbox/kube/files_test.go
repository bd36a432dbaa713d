package kube

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/sandbox"
)

// TestReadFiles: a tree becomes Secrets of at most FilesChunkBytes, with
// each file's path and mode (executable where its owner could execute
// it), links inside the tree as copies, links out of it left out.
func TestReadFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, size int, mode os.FileMode) {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.Repeat("x", size)), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("f", 10, 0o600)
	write("sub/run.sh", 20, 0o700)
	write("big1", 500<<10, 0o644)
	write("big2", 500<<10, 0o644)
	for link, target := range map[string]string{"in": "sub/run.sh", "out": "/etc/passwd"} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	r := &Runtime{o: Options{Namespace: "ns"}}
	b := &box{id: "s1", name: podName("s1")}
	sets, err := r.readFiles(sandbox.Spec{Files: []sandbox.Files{{Dir: dir, Target: "/app"}}}, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(sets) != 1 || len(sets[0].secrets) != 2 {
		t.Fatalf("want one set of 2 Secrets, got %+v", sets)
	}
	got := map[string]int32{}
	for i, s := range sets[0].secrets {
		size := 0
		for _, it := range sets[0].items[i] {
			got[it.Path] = *it.Mode
			size += len(s.Data[it.Key])
		}
		if size > FilesChunkBytes || !strings.HasPrefix(s.Name, "berth-s1-files-") {
			t.Errorf("secret %s: %d bytes", s.Name, size)
		}
	}
	want := map[string]int32{"f": 0o444, "sub/run.sh": 0o555, "big1": 0o444, "big2": 0o444, "in": 0o555}
	if len(got) != len(want) {
		t.Errorf("files %v, want %v", got, want)
	}
	for p, m := range want {
		if got[p] != m {
			t.Errorf("%s: mode %o, want %o", p, got[p], m)
		}
	}
	write("huge", FilesChunkBytes+1, 0o644)
	if _, err := r.readFiles(sandbox.Spec{Files: []sandbox.Files{{Dir: dir, Target: "/app"}}}, b, nil); err == nil || !strings.Contains(err.Error(), "huge") {
		t.Errorf("a file above the chunk size: %v", err)
	}
	if _, err := r.readFiles(sandbox.Spec{Files: []sandbox.Files{{Dir: dir, Target: "/.berth/x"}}}, b, nil); err == nil {
		t.Error("files at the agent's path accepted")
	}
}
