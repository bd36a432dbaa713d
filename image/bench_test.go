package image_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/internal/imagetest"
	"github.com/berth-dev/berth/internal/registrytest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestPullBenchmark measures a cold pull of a multi-layer image built from
// host directories (~80 MB unpacked), a pull of the cached digest, and, if
// $CRANE names a crane binary, `crane export | tar -x` of the same image.
// It runs only with BERTH_IMAGE_BENCH=N (N rounds).
func TestPullBenchmark(t *testing.T) {
	if os.Getenv("BERTH_IMAGE_BENCH") == "" {
		t.Skip("set BERTH_IMAGE_BENCH=1 to measure pulls")
	}
	reg := registrytest.Start(t, registrytest.Options{})
	var layers []v1.Layer
	for _, d := range []string{"/usr/lib/python3.11", "/usr/share/perl"} {
		if _, err := os.Stat(d); err != nil {
			t.Skipf("%s: %v", d, err)
		}
		layers = append(layers, imagetest.DirLayer(t, d, d[1:]))
	}
	img := imagetest.Image(t, v1.Config{}, layers...)
	imagetest.Push(t, reg.Ref("bench:1"), img)
	var compressed int64
	for _, l := range layers {
		n, _ := l.Size()
		compressed += n
	}
	ctx := context.Background()
	rounds, _ := strconv.Atoi(os.Getenv("BERTH_IMAGE_BENCH"))
	for i := 0; i < max(rounds, 1); i++ {
		crane := os.Getenv("CRANE")
		var craneWall, craneCPU time.Duration
		if crane != "" && i%2 == 1 { // alternate the order: writeback of the first slows the second
			craneWall, craneCPU = craneExport(t, crane, reg.Ref("bench:1"))
		}
		s := open(t, filepath.Join(t.TempDir(), "images"), image.Options{Insecure: []string{reg.Host}, IDShift: shift})
		t0, c0 := time.Now(), cpu(syscall.RUSAGE_SELF)
		im, err := s.Pull(ctx, reg.Ref("bench:1"), image.PullOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cold, coldCPU := time.Since(t0), cpu(syscall.RUSAGE_SELF)-c0
		t0 = time.Now()
		if _, err := s.Pull(ctx, reg.Ref("bench:1"), image.PullOptions{}); err != nil {
			t.Fatal(err)
		}
		warm := time.Since(t0)
		t.Logf("image: %d layers, %.1f MB compressed, %.1f MB on disk", len(layers), float64(compressed)/1e6, float64(im.Size)/1e6)
		t.Logf("berth pull+unpack (cold): %v (CPU %v, registry's included); pull of the cached digest by tag: %v", cold, coldCPU, warm)
		if crane == "" {
			continue
		}
		if i%2 == 0 {
			craneWall, craneCPU = craneExport(t, crane, reg.Ref("bench:1"))
		}
		t.Logf("crane export | tar -x: %v (CPU %v); berth/crane: wall %.2f, CPU %.2f (%s first)", craneWall, craneCPU,
			float64(cold)/float64(craneWall), float64(coldCPU)/float64(craneCPU), map[bool]string{true: "crane", false: "berth"}[i%2 == 1])
		os.RemoveAll(s.Dir())
	}
}

// craneExport times crane export REF - | tar -x.
func craneExport(t *testing.T, crane, ref string) (wall, used time.Duration) {
	dir := t.TempDir()
	t0, c0 := time.Now(), cpu(syscall.RUSAGE_CHILDREN)
	cmd := exec.Command("sh", "-c", `"$0" export --insecure "$1" - | tar -x -C "$2"`, crane, ref, dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("crane export: %v\n%s", err, out)
	}
	wall, used = time.Since(t0), cpu(syscall.RUSAGE_CHILDREN)-c0
	os.RemoveAll(dir)
	return wall, used
}

// cpu is the user and system time used so far.
func cpu(who int) time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(who, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
