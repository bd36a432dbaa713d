package admit

import (
	"errors"
	"strings"
	"testing"

	"github.com/berth-dev/berth/sandbox"
)

const (
	mi = int64(1) << 20
	gi = int64(1) << 30
)

func budget(t *testing.T, o Options) *Budget {
	t.Helper()
	b, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Reserve admits sandboxes while their sum stays within capacity × ratio,
// for memory and disk each.
func TestReserve(t *testing.T) {
	type step struct {
		mem, disk int64
		ok        bool
		resource  string // of the refusal
	}
	for _, tc := range []struct {
		name  string
		o     Options
		steps []step
	}{
		{"memory at ratio 1", Options{MemoryCapacity: gi, MemoryOvercommit: 1, DiskCapacity: 100 * gi},
			[]step{{512 * mi, gi, true, ""}, {512 * mi, gi, true, ""}, {1, gi, false, "memory"}}},
		{"memory overcommitted 1.5", Options{MemoryCapacity: 2 * gi, MemoryOvercommit: 1.5, DiskCapacity: 100 * gi},
			[]step{{gi, 0, true, ""}, {gi, 0, true, ""}, {gi, 0, true, ""}, {512 * mi, 0, false, "memory"}}},
		{"100 × 512Mi on a 23Gi host", Options{MemoryCapacity: 23 * gi, DiskCapacity: 1 << 50},
			append(repeat(step{512 * mi, 0, true, ""}, 69), step{512 * mi, 0, false, "memory"})},
		{"disk at ratio 2", Options{MemoryCapacity: 100 * gi, DiskCapacity: 3 * gi, DiskOvercommit: 2},
			[]step{{mi, 4 * gi, true, ""}, {mi, 2 * gi, true, ""}, {mi, 1, false, "disk"}}},
		{"one sandbox larger than everything", Options{MemoryCapacity: gi, MemoryOvercommit: 1, DiskCapacity: gi},
			[]step{{2 * gi, 0, false, "memory"}, {mi, 3 * gi, false, "disk"}, {gi, gi, true, ""}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := budget(t, tc.o)
			for i, s := range tc.steps {
				release, err := b.Reserve(s.mem, s.disk)
				if (err == nil) != s.ok {
					t.Fatalf("step %d (%d, %d): err %v, want ok %v (usage %+v)", i, s.mem, s.disk, err, s.ok, b.Usage())
				}
				if err != nil {
					var e *Error
					if !errors.As(err, &e) || e.Resource != s.resource {
						t.Fatalf("step %d: refused for %v, want %s", i, err, s.resource)
					}
					continue
				}
				if release == nil {
					t.Fatal("no release")
				}
			}
		})
	}
}

func repeat[T any](v T, n int) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// Release gives the share back once, however often it is called, and
// wakes whoever waits on Freed.
func TestReleaseAndFreed(t *testing.T) {
	b := budget(t, Options{MemoryCapacity: gi, MemoryOvercommit: 1, DiskCapacity: gi, DiskOvercommit: 1})
	r1, err := b.Reserve(768*mi, 512*mi)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Reserve(512*mi, mi); !errors.Is(err, sandbox.ErrNoCapacity) {
		t.Fatalf("over capacity: %v", err)
	}
	freed := b.Freed()
	select {
	case <-freed:
		t.Fatal("Freed closed before a release")
	default:
	}
	r1()
	r1()
	select {
	case <-freed:
	default:
		t.Fatal("Freed not closed by a release")
	}
	if u := b.Usage(); u.MemoryUsed != 0 || u.DiskUsed != 0 {
		t.Fatalf("after release (twice): %+v", u)
	}
	for range 2 {
		if _, err := b.Reserve(512*mi, 512*mi); err != nil {
			t.Fatalf("after release: %v", err)
		}
	}
}

// Fits says whether n sandboxes could ever run at once, and its error is
// not a temporary one.
func TestFits(t *testing.T) {
	b := budget(t, Options{MemoryCapacity: 4 * gi, MemoryOvercommit: 1.5, DiskCapacity: 10 * gi, DiskOvercommit: 2})
	for _, tc := range []struct {
		mem, disk int64
		n         int
		ok        bool
	}{
		{6 * gi, 20 * gi, 1, true},
		{6*gi + 1, gi, 1, false},
		{gi, 20*gi + 1, 1, false},
		{2 * gi, gi, 3, true},
		{2 * gi, gi, 4, false},
		{gi, 5 * gi, 4, true},
		{gi, 5 * gi, 5, false},
		{gi, gi, 0, true},
	} {
		err := b.Fits(tc.mem, tc.disk, tc.n)
		if (err == nil) != tc.ok {
			t.Errorf("Fits(%d, %d, %d) = %v, want ok %v", tc.mem, tc.disk, tc.n, err, tc.ok)
		}
		if err != nil && errors.Is(err, sandbox.ErrNoCapacity) {
			t.Errorf("Fits error is temporary: %v", err)
		}
	}
}

// The messages say what is full, by how much, and what to do.
func TestMessages(t *testing.T) {
	b := budget(t, Options{MemoryCapacity: 2 * gi, MemoryOvercommit: 1.5, DiskCapacity: 10 * gi})
	if _, err := b.Reserve(3*gi, 0); err != nil {
		t.Fatal(err)
	}
	_, err := b.Reserve(512*mi, 0)
	for _, want := range []string{"host at capacity", "3Gi of the 3Gi (2Gi × --memory-overcommit 1.5) of memory", "needs 512Mi", "try again"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: missing %q", err, want)
		}
	}
	err = b.Fits(512*mi, gi, 7)
	for _, want := range []string{"7 sandboxes at once with 512Mi of memory each cannot run on this host", "3Gi (2Gi × --memory-overcommit 1.5)"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: missing %q", err, want)
		}
	}
}

func TestOptions(t *testing.T) {
	for _, o := range []Options{{MemoryOvercommit: -1}, {DiskOvercommit: 1000}} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
	b := budget(t, Options{DiskPath: "/nonexistent/berth/dir"})
	if u := b.Usage(); u.MemoryLimit <= 0 || u.DiskLimit <= 0 {
		t.Fatalf("measured nothing: %+v", u)
	}
	if mem, _ := HostMemory(); mem <= 0 {
		t.Fatal("no host memory")
	}
}
