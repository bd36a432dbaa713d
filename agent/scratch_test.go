package agent

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestScratchOnFullDisk: once user code has filled the disk the agent's
// scratch files live on (to the last block), the agent still writes the
// script of the next execution — the one that deletes files — from the
// space it held back, and takes that space again once there is room.
func TestScratchOnFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=512k"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	x := &executor{private: dir}
	x.reserve()
	if _, err := os.Stat(x.reservePath()); err != nil {
		t.Fatalf("no reserve taken: %v", err)
	}

	// User code fills the disk.
	big := filepath.Join(dir, "big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	for {
		if _, err = f.Write(chunk); err != nil {
			break
		}
	}
	f.Close()
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling the disk: %v", err)
	}

	script := bytes.Repeat([]byte("#"), 8<<10)
	if err := x.writeScratch(filepath.Join(dir, "cell.sh"), script); err != nil {
		t.Fatalf("the agent could not write its script on a full disk: %v", err)
	}
	// The code deletes its file; the reserve is taken again.
	os.Remove(big)
	x.reserve()
	if _, err := os.Stat(x.reservePath()); err != nil {
		t.Fatalf("reserve not taken again once there was room: %v", err)
	}
}
