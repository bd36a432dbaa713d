package sandboxtest

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-dev/berth/sandbox"
)

// BenchStart measures a warm Start (one sandbox was started and destroyed
// before the timer starts: the disk template exists, the page cache is
// warm) until the agent answers, then Destroy, on root (nil: the host's).
func BenchStart(b *testing.B, rt sandbox.Runtime, root *sandbox.Root) {
	ctx := context.Background()
	one := func(i int) {
		sb, err := rt.Start(ctx, sandbox.Spec{ID: fmt.Sprintf("bench-%d", i), Root: root})
		if err != nil {
			b.Fatal(err)
		}
		if err := sb.Agent().Ping(ctx); err != nil {
			b.Fatal(err)
		}
		_ = sb.Destroy(ctx)
	}
	one(-1)
	for i := 0; b.Loop(); i++ {
		one(i)
	}
}

// BenchShared starts n sandboxes on one image root, each having written a
// file to its root, and reports what each costs the host in memory (its
// cgroup's), how much of its own disk its file system counts as used
// (ext4's inode tables included, which the sparse image does not hold on
// the host), and the shared root's size once.
func BenchShared(b *testing.B, rt sandbox.Runtime, root *sandbox.Root, n int) {
	ctx := context.Background()
	for b.Loop() {
		var boxes []sandbox.Sandbox
		for i := range n {
			sb, err := rt.Start(ctx, sandbox.Spec{ID: fmt.Sprintf("shared-%d", i), Root: root})
			if err != nil {
				b.Fatal(err)
			}
			boxes = append(boxes, sb)
			if out := Shell(b, sb, "echo hi > /home/app/f && python3 -c pass"); out.ExitCode != 0 {
				b.Fatalf("%+v", out)
			}
		}
		var mem, disk uint64
		for _, sb := range boxes {
			st := sb.(sandbox.StatsReporter).Stats()
			mem += st.MemoryBytes
			disk += uint64(st.DiskBytes)
		}
		b.ReportMetric(float64(mem)/float64(n)/(1<<20), "MiB-mem/sandbox")
		b.ReportMetric(float64(disk)/float64(n)/(1<<20), "MiB-disk-statfs/sandbox")
		for _, sb := range boxes {
			_ = sb.Destroy(ctx)
		}
	}
	if out, err := exec.Command("du", "-sm", root.Dir).Output(); err == nil {
		mb, _ := strconv.Atoi(strings.Fields(string(out))[0])
		b.ReportMetric(float64(mb), "MiB-shared-root")
	}
}
