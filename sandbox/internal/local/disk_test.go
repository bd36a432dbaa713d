package local

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testutil"
)

func TestDiskMountAndUnmount(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	h := &Host{Dir: dir}
	d, err := h.MakeDisk(dir, 64<<20, 1_000_123)
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

// BenchmarkMakeDisk measures what a disk adds to a sandbox's start (make,
// format, mount) and to its teardown (unmount).
func BenchmarkMakeDisk(b *testing.B) {
	testutil.RequireRoot(b)
	for _, size := range []int64{64 << 20, 1 << 30} {
		b.Run(strconv.FormatInt(size>>20, 10)+"MiB", func(b *testing.B) {
			dir := b.TempDir()
			h := &Host{Dir: dir}
			var make, unmount time.Duration
			for i := 0; b.Loop(); i++ {
				sub := filepath.Join(dir, strconv.Itoa(i))
				if err := os.Mkdir(sub, 0o700); err != nil {
					b.Fatal(err)
				}
				t0 := time.Now()
				d, err := h.MakeDisk(sub, size, 1_000_123)
				if err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				d.Unmount()
				make += t1.Sub(t0)
				unmount += time.Since(t1)
			}
			b.ReportMetric(float64(make.Microseconds())/float64(b.N)/1000, "make-ms")
			b.ReportMetric(float64(unmount.Microseconds())/float64(b.N)/1000, "unmount-ms")
		})
	}
}

// cleanupDisks (run by Cleanup at start) unmounts and detaches the disks a
// crashed server left mounted.
func TestCleanupDisks(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	h := &Host{Dir: dir}
	for _, id := range []string{"a", "b"} {
		sb := filepath.Join(dir, "sb-"+id)
		if err := os.Mkdir(sb, 0o711); err != nil {
			t.Fatal(err)
		}
		if _, err := h.MakeDisk(sb, 32<<20, 1_000_123); err != nil {
			t.Fatal(err)
		}
	}
	if len(MountsUnder(dir)) != 2 || len(LoopDevicesUnder(dir)) != 2 {
		t.Fatalf("mounts %v, loops %v", MountsUnder(dir), LoopDevicesUnder(dir))
	}
	cleanupDisks(dir)
	deadline := time.Now().Add(10 * time.Second)
	for len(MountsUnder(dir))+len(LoopDevicesUnder(dir)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("left: mounts %v, loops %v", MountsUnder(dir), LoopDevicesUnder(dir))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
