package local

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/internal/testutil"
)

func TestDiskMountAndUnmount(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	d, err := MakeDisk(dir, 64<<20, 1_000_123)
	if err != nil {
		t.Fatal(err)
	}
	used, size, iused, inodes, err := d.Usage()
	t.Logf("used %d size %d inodes %d/%d err %v", used, size, iused, inodes, err)
	if err := os.WriteFile(filepath.Join(d.Mount, DataDir, "x"), []byte("hi"), 0o600); err != nil {
		t.Fatal(err)
	}
	if len(LoopDevicesUnder(dir)) != 1 || len(MountsUnder(dir)) != 1 {
		t.Fatalf("loop %v mounts %v", LoopDevicesUnder(dir), MountsUnder(dir))
	}
	d.Unmount()
	if l, m := LoopDevicesUnder(dir), MountsUnder(dir); len(l)+len(m) > 0 {
		t.Fatalf("left: loop %v mounts %v", l, m)
	}
}
