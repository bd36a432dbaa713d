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
