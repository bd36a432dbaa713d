package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/server"
)

// TestStateDirAndAppVolumes: with --state-dir, every piece of sandbox
// state (the drivers', app files, volumes, sources) lives under it and
// nothing under /var/lib/berth; an app's volume is a directory the local
// driver keeps for the app's group, private to the group's host uid, and
// it goes with the app.
func TestStateDirAndAppVolumes(t *testing.T) {
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "run.sh"), []byte("#!/bin/sh\necho kept > /data/f\necho WROTE\nexec sleep 600\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	dataDir := t.TempDir()
	b := startBerth(t, dataDir, "--state-dir", state)
	abs, _ := filepath.Abs(dataDir)
	inst := server.Instance(abs)
	b.cli("app", "deploy", "vol", "--dir", src, "--min", "1", "--probe", "none", "--volume", "data:/data", "--command", "./run.sh")
	b.waitAppLog("vol", "[stdout] WROTE")

	for _, d := range []string{"bwrap", "apps/vol/revisions/vol--r1", "sources"} {
		if _, err := os.Stat(filepath.Join(state, inst, d)); err != nil {
			t.Errorf("%s not in the state dir: %v", d, err)
		}
	}
	// The sandboxes run the small berth-agent installed beside berth, not
	// berth itself.
	staged, err1 := os.Stat(filepath.Join(state, inst, "bwrap", "agent"))
	small, err2 := os.Stat(filepath.Join(filepath.Dir(b.bin), "berth-agent"))
	if err1 != nil || err2 != nil || staged.Size() != small.Size() {
		t.Errorf("the sandboxes' agent is not berth-agent: %v %v", err1, err2)
	}
	if _, err := os.Stat(filepath.Join("/var/lib/berth", inst)); err == nil {
		t.Errorf("/var/lib/berth/%s exists with --state-dir", inst)
	}
	vol := filepath.Join(state, inst, "volumes", "app_vol", "data")
	var info os.FileInfo
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if info, err = os.Stat(filepath.Join(vol, "f")); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("the volume's file on the host: %v", err)
	}
	dir, _ := os.Stat(vol)
	fst, dst := info.Sys().(*syscall.Stat_t), dir.Sys().(*syscall.Stat_t)
	if fst.Uid != dst.Uid || dst.Uid < 900_000 || dst.Uid >= 1_000_000 || dir.Mode().Perm() != 0o700 {
		t.Errorf("volume owned by %d, its file by %d, mode %v: want the group's uid (900,000 up), private", dst.Uid, fst.Uid, dir.Mode())
	}
	if out := b.cli("app", "delete", "vol"); !strings.Contains(out, "vol") {
		t.Logf("delete: %s", out)
	}
	if _, err := os.Stat(filepath.Join(state, inst, "volumes", "app_vol")); err == nil {
		t.Error("the app's volumes outlived it")
	}
}

// TestOldAppVolumesMoved: a volume that an earlier Berth kept in the app's
// own directory (APP/volumes/NAME, owned by the app's old uid) is moved to
// the driver's volumes at start, owned by the group's uid: the app finds
// its files after the upgrade.
func TestOldAppVolumesMoved(t *testing.T) {
	src := t.TempDir()
	script := "#!/bin/sh\nif [ -f /data/f ]; then echo \"FOUND $(cat /data/f)\"; else echo first > /data/f; echo WROTE; fi\nexec sleep 600\n"
	if err := os.WriteFile(filepath.Join(src, "run.sh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	state, dataDir := t.TempDir(), t.TempDir()
	b := startBerth(t, dataDir, "--state-dir", state)
	abs, _ := filepath.Abs(dataDir)
	inst := filepath.Join(state, server.Instance(abs))
	b.cli("app", "deploy", "old", "--dir", src, "--min", "1", "--probe", "none", "--volume", "data:/data", "--command", "./run.sh")
	b.waitAppLog("old", "[stdout] WROTE")
	b.stop()

	// The layout of the earlier version: the volume in the app's directory,
	// owned by another uid.
	vol := filepath.Join(inst, "volumes", "app_old", "data")
	old := filepath.Join(inst, "apps", "old", "volumes", "data")
	if err := os.MkdirAll(filepath.Dir(old), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(vol, old); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(old, "f"), []byte("from-the-old-layout\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{old, filepath.Join(old, "f")} {
		if err := os.Lchown(p, 1_234_567, 1_234_567); err != nil {
			t.Fatal(err)
		}
	}

	b = startBerth(t, dataDir, "--state-dir", state)
	b.waitLog("moved an app's volume of an earlier Berth version")
	b.waitAppLog("old", "[stdout] FOUND from-the-old-layout")
	fi, err := os.Stat(filepath.Join(vol, "f"))
	if err != nil || fi.Sys().(*syscall.Stat_t).Uid == 1_234_567 {
		t.Fatalf("the moved volume's file: %v %+v", err, fi)
	}
	if _, err := os.Stat(filepath.Dir(old)); err == nil {
		t.Error("the old volumes directory is still there")
	}
}
