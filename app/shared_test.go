package app

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/sandbox"
)

// fakeShared is a Shared runtime's view, set by the test.
type fakeShared struct {
	mu       sync.Mutex
	slots    []SlotState
	scaled   map[string]bool
	busy     map[string][]time.Time
	attached []string
	notFound int // Attaches that find no sandbox before the others fail
}

func (f *fakeShared) Attach(_ context.Context, id string) (sandbox.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attached = append(f.attached, id)
	if f.notFound > 0 {
		f.notFound--
		return nil, sandbox.ErrNotFound
	}
	return nil, errors.New("fake: no sandbox")
}

func (f *fakeShared) Slots(string) []SlotState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.slots)
}

func (f *fakeShared) ScaledDown(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.scaled[id]
}

func (f *fakeShared) MarkBusy(_ context.Context, id string, t time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.busy == nil {
		f.busy = map[string][]time.Time{}
	}
	f.busy[id] = append(f.busy[id], t)
	return nil
}

func (f *fakeShared) MarkScaledDown(context.Context, string) error { return nil }

// existsRuntime refuses every Start as a sandbox that exists already.
type existsRuntime struct{ sandbox.Runtime }

func (existsRuntime) Start(context.Context, sandbox.Spec) (sandbox.Sandbox, error) {
	return nil, sandbox.ErrExists
}

// sharedRevision is a revision runtime on a Shared runtime, with no
// goroutines of its own.
func sharedRevision(t *testing.T, f *fakeShared, cfg Config) *revisionRuntime {
	cfg.Egress = "disabled"
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{log: slog.Default(), runtime: existsRuntime{}, shared: f}
	r := &revisionRuntime{app: &App{m: m, name: "a", dir: t.TempDir()}, rev: Revision{Name: "a--r1", Config: cfg},
		ctx: ctx, end: cancel, log: slog.Default(), changed: make(chan struct{}), shared: f}
	r.secrets = func() (secretSet, error) { return secretSet{}, nil }
	t.Cleanup(func() { cancel(); r.wg.Wait() })
	return r
}

func TestClusterSlots(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f := &fakeShared{slots: []SlotState{
		{ID: "a--r1-s0", LastBusy: t0},
		{ID: "a--r1-s2", LastBusy: t0.Add(time.Second)},
		{ID: "a--r1-s3", ScaledDown: true, LastBusy: t0.Add(2 * time.Second)},
		{ID: "a--r1-s4", Going: true},
		{ID: "a--r1-sx"},
	}}
	r := sharedRevision(t, f, Config{Max: 10})
	live, taken, busy := r.clusterSlots()
	if want := map[int]bool{0: true, 2: true}; !mapsEqual(live, want) {
		t.Errorf("live %v, want %v", live, want)
	}
	if want := map[int]bool{0: true, 2: true, 3: true, 4: true}; !mapsEqual(taken, want) {
		t.Errorf("taken %v, want %v", taken, want)
	}
	if !busy.Equal(t0.Add(2 * time.Second)) {
		t.Errorf("busy %v", busy)
	}
}

func mapsEqual(a, b map[int]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func TestNextIndexAndAdopt(t *testing.T) {
	tests := []struct {
		name      string
		local     []int
		cluster   []SlotState
		max       int
		wantNext  int
		wantAfter []int // local slots after adopting
	}{
		{name: "empty", wantNext: 0, max: 5},
		{name: "others run 0 and 1", cluster: []SlotState{{ID: "a--r1-s0"}, {ID: "a--r1-s1"}}, max: 5, wantNext: 2, wantAfter: []int{0, 1}},
		{name: "a gap", local: []int{0}, cluster: []SlotState{{ID: "a--r1-s0"}, {ID: "a--r1-s2"}}, max: 5, wantNext: 1, wantAfter: []int{0, 2}},
		{name: "going ones are taken, not adopted", cluster: []SlotState{{ID: "a--r1-s0", Going: true}, {ID: "a--r1-s1", ScaledDown: true}}, max: 5, wantNext: 2},
		{name: "at most max", cluster: []SlotState{{ID: "a--r1-s0"}, {ID: "a--r1-s1"}, {ID: "a--r1-s2"}}, max: 2, wantNext: 3, wantAfter: []int{0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeShared{slots: tt.cluster}
			r := sharedRevision(t, f, Config{Max: tt.max})
			r.mu.Lock()
			defer r.mu.Unlock()
			for _, i := range tt.local {
				r.slots = append(r.slots, &slot{index: i, id: r.slotID(i), stop: make(chan struct{})})
			}
			if got := r.nextIndexLocked(); got != tt.wantNext {
				t.Errorf("next index %d, want %d", got, tt.wantNext)
			}
			live, _, _ := r.clusterSlots()
			r.adoptLocked(live)
			var got []int
			for _, s := range r.slots {
				got = append(got, s.index)
				if s.id != r.slotID(s.index) {
					t.Errorf("slot %d has id %q", s.index, s.id)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.wantAfter) {
				t.Errorf("slots after adopting %v, want %v", got, tt.wantAfter)
			}
			if adopted := len(tt.wantAfter) > len(tt.local); adopted == r.lastBusy.IsZero() {
				t.Errorf("adopted %v, last busy %v: an adopted replica counts as busy now", adopted, r.lastBusy)
			}
		})
	}
}

// TestStartSharedAttaches: a sandbox that exists already (another Berth
// replica started it) is attached to, by its slot's ID, also when its Pod
// is not there yet at first.
func TestStartSharedAttaches(t *testing.T) {
	f := &fakeShared{notFound: 2} // not there yet, twice
	r := sharedRevision(t, f, Config{Max: 1})
	s := &slot{index: 3, id: r.slotID(3)}
	b, err := r.startSandbox(s)
	if err == nil || !b.attached || b.id != "a--r1-s3" {
		t.Fatalf("box %+v, err %v: want an attach of a--r1-s3 (which the fake fails)", b, err)
	}
	if !slices.Equal(f.attached, []string{"a--r1-s3", "a--r1-s3", "a--r1-s3"}) {
		t.Fatalf("attached %v", f.attached)
	}
}

// TestMarkBusy: a replica's shared sandbox is marked busy when it served
// requests since its last mark, at most once a second; an idle one is not.
func TestMarkBusy(t *testing.T) {
	f := &fakeShared{}
	r := sharedRevision(t, f, Config{Max: 1})
	busy, idle := &Replica{ID: "a--r1-s0", rev: r}, &Replica{ID: "a--r1-s1", rev: r}
	busy.inflight.Add(1)
	reps := []*Replica{busy, idle}
	r.markBusy(reps, false)
	r.markBusy(reps, false) // within the second: no new mark
	if n := len(f.busy["a--r1-s0"]); n != 1 {
		t.Fatalf("%d marks of the busy replica, want 1", n)
	}
	if n := len(f.busy["a--r1-s1"]); n != 0 {
		t.Fatalf("%d marks of the idle replica, want 0", n)
	}
	idle.markedAt = idle.markedAt.Add(-busyMarkEvery)
	r.markBusy([]*Replica{idle}, true) // requests wait for a replica
	if n := len(f.busy["a--r1-s1"]); n != 1 {
		t.Fatalf("%d marks of a replica while requests wait, want 1", n)
	}
	busy.markedAt = busy.markedAt.Add(-busyMarkEvery) // a second later
	busy.inflight.Add(-1)
	busy.busyAt.Store(time.Now().UnixNano())
	r.markBusy(reps, false)
	if n := len(f.busy["a--r1-s0"]); n != 2 {
		t.Fatalf("%d marks after a request ended, want 2", n)
	}
	busy.markedAt = busy.markedAt.Add(-busyMarkEvery)
	r.markBusy(reps, false) // nothing since
	if n := len(f.busy["a--r1-s0"]); n != 2 {
		t.Fatalf("%d marks with no request since, want 2", n)
	}
	r.app.m.noBusyMarks = true
	busy.inflight.Add(1)
	busy.markedAt = busy.markedAt.Add(-busyMarkEvery)
	r.markBusy(reps, false)
	if n := len(f.busy["a--r1-s0"]); n != 2 {
		t.Fatalf("%d marks with marks switched off, want 2", n)
	}
}

func TestServiceRunning(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{&agent.Error{Status: 400, Message: `bad name: service "app" is running`}, true},
		{&agent.Error{Status: 500, Message: "boom"}, false},
		{errors.New(`service "app" is running`), false},
		{nil, false},
	}
	for _, tt := range tests {
		if got := serviceRunning(tt.err); got != tt.want {
			t.Errorf("serviceRunning(%v) = %v", tt.err, got)
		}
	}
}

// TestSlotScaledDownElsewhere: a replica whose shared sandbox ended is
// dropped if the leader marked it scaled down, and replaced otherwise (a
// crash).
func TestSlotScaledDownElsewhere(t *testing.T) {
	for _, scaled := range []bool{true, false} {
		f := &fakeShared{scaled: map[string]bool{"a--r1-s0": scaled}}
		r := sharedRevision(t, f, Config{Max: 1})
		r.app.logSubs = map[chan LogEntry]struct{}{}
		r.mu.Lock()
		r.startSlotLocked(0)
		s := r.slots[0]
		r.mu.Unlock()
		deadline := time.Now().Add(3 * time.Second)
		for {
			r.mu.Lock()
			n := len(r.slots)
			r.mu.Unlock()
			if scaled && n == 0 {
				break
			}
			if !scaled && s.restarts.Load() >= 1 && time.Now().After(deadline.Add(-time.Second)) {
				if n != 1 {
					t.Fatalf("a crashed replica's slot was dropped")
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("scaled %v: %d slots, %d restarts", scaled, n, s.restarts.Load())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestScaleDownSparesStartingReplicas: the leader does not remove a shared
// replica on its way to ready (another Berth replica may have started it
// for requests the leader does not see).
func TestScaleDownSparesStartingReplicas(t *testing.T) {
	r := sharedRevision(t, &fakeShared{}, Config{Max: 2})
	idle, starting := &slot{index: 0, stop: make(chan struct{})}, &slot{index: 1, stop: make(chan struct{})}
	starting.starting.Store(true)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.slots = []*slot{idle, starting}
	if !r.removeIdleSlotLocked() || len(r.slots) != 1 || r.slots[0] != starting {
		t.Fatalf("removed the wrong slot: %d left", len(r.slots))
	}
	if r.removeIdleSlotLocked() {
		t.Fatal("removed a starting replica")
	}
}
