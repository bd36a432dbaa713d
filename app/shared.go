package app

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/sandbox"
)

// Shared is a runtime whose sandboxes every Berth replica shares (the kube
// driver with the state in the cluster, package internal/kubeslots). With
// it, an app revision's replicas are one set for all Berth replicas
// instead of a set of each: replica i of a revision runs in the sandbox
// "<revision>-s<i>", which whichever Berth replica wants it first starts
// and the others attach to. Any replica scales up (the next index); only
// the leader scales down, after no Berth replica has marked any of the
// revision's sandboxes busy for the revision's scale-down delay; it marks
// a sandbox scaled down before it removes it, so that the others drop the
// replica instead of replacing it as they replace one that crashed.
type Shared interface {
	// Attach returns sandbox id, which a Berth replica started.
	Attach(ctx context.Context, id string) (sandbox.Sandbox, error)
	// Slots lists the sandboxes whose IDs start with prefix, as last
	// seen, those on their way out too.
	Slots(prefix string) []SlotState
	// ScaledDown reports whether sandbox id, as last seen, was marked
	// scaled down.
	ScaledDown(id string) bool
	// MarkBusy records on sandbox id that it served requests at t.
	MarkBusy(ctx context.Context, id string, t time.Time) error
	// MarkScaledDown records on sandbox id that the leader removes it.
	MarkScaledDown(ctx context.Context, id string) error
}

// SlotState is a shared sandbox as a Shared runtime sees it.
type SlotState struct {
	ID string
	// LastBusy is the latest time a Berth replica marked it busy.
	LastBusy time.Time
	// ScaledDown is set once the leader marked it for removal; Going
	// once it is being removed (for whatever reason).
	ScaledDown, Going bool
}

// busyMarkEvery is the least time between two busy marks of a replica's
// sandbox by one Berth replica.
const busyMarkEvery = time.Second

// slotPrefix starts the IDs of the revision's shared sandboxes.
func (r *revisionRuntime) slotPrefix() string { return r.rev.Name + "-s" }

// slotID is the ID of the revision's shared sandbox number i.
func (r *revisionRuntime) slotID(i int) string { return r.slotPrefix() + strconv.Itoa(i) }

// clusterSlots returns the indices of the revision's shared sandboxes that
// exist and are not on their way out (live), of all that exist (taken),
// and the latest busy mark on any of them.
func (r *revisionRuntime) clusterSlots() (live, taken map[int]bool, busy time.Time) {
	live, taken = map[int]bool{}, map[int]bool{}
	prefix := r.slotPrefix()
	for _, s := range r.shared.Slots(prefix) {
		i, err := strconv.Atoi(strings.TrimPrefix(s.ID, prefix))
		if err != nil || i < 0 {
			continue
		}
		if s.LastBusy.After(busy) {
			busy = s.LastBusy
		}
		taken[i] = true
		if !s.ScaledDown && !s.Going {
			live[i] = true
		}
	}
	return live, taken, busy
}

// adoptLocked runs a replica of each shared sandbox of the revision that
// another Berth replica started (or that was there when this one
// started): the replicas are one set.
func (r *revisionRuntime) adoptLocked(cluster map[int]bool) {
	have := map[int]bool{}
	for _, s := range r.slots {
		have[s.index] = true
	}
	var add []int
	for i := range cluster {
		if !have[i] {
			add = append(add, i)
		}
	}
	slices.Sort(add)
	add = add[:min(len(add), max(r.rev.Config.Max-len(r.slots), 0))]
	for _, i := range add {
		r.startSlotLocked(i)
	}
	if len(add) > 0 {
		// Another replica wanted it just now (for requests this one
		// does not see yet).
		r.lastBusy = time.Now()
		r.log.Info("adopted replicas", "indices", add, "replicas", len(r.slots))
	}
}

// nextIndexLocked is the lowest slot index neither this Berth replica nor
// (as last seen) another one runs.
func (r *revisionRuntime) nextIndexLocked() int {
	taken := map[int]bool{}
	for _, s := range r.slots {
		taken[s.index] = true
	}
	if r.shared != nil {
		_, cluster, _ := r.clusterSlots()
		for i := range cluster {
			taken[i] = true
		}
	}
	i := 0
	for taken[i] {
		i++
	}
	return i
}

// markBusy marks the shared sandboxes of reps that served requests since
// their last mark (at most one mark a second each), or all of them while
// requests wait for a replica (waiting): the leader reads the marks
// before it scales down.
func (r *revisionRuntime) markBusy(reps []*Replica, waiting bool) {
	if r.app.m.noBusyMarks {
		return
	}
	now := time.Now()
	for _, rep := range reps {
		var t time.Time
		if ns := rep.busyAt.Load(); ns != 0 {
			t = time.Unix(0, ns)
		}
		if waiting || rep.inflight.Load() > 0 {
			t = now
		}
		if !t.After(rep.marked) || now.Sub(rep.markedAt) < busyMarkEvery {
			continue
		}
		ctx, cancel := context.WithTimeout(r.ctx, 2*time.Second)
		err := r.shared.MarkBusy(ctx, rep.ID, t)
		cancel()
		if err != nil {
			r.log.Debug("mark replica busy", "replica", rep.ID, "err", err)
			continue
		}
		rep.marked, rep.markedAt = t, now
	}
}

// startShared starts the slot's shared sandbox from spec, or attaches to
// it if another Berth replica started it. That one may still be making
// it (its Pod comes after its Secret) or replacing it (the old Pod still
// goes): an Attach that finds no Pod is tried again for a few seconds.
func (r *revisionRuntime) startShared(spec sandbox.Spec) (sandbox.Sandbox, bool, error) {
	sb, err := r.app.m.runtime.Start(r.ctx, spec)
	if !errors.Is(err, sandbox.ErrExists) {
		return sb, false, err
	}
	for wait := 100 * time.Millisecond; ; wait *= 2 {
		sb, err = r.shared.Attach(r.ctx, spec.ID)
		if !errors.Is(err, sandbox.ErrNotFound) || wait > 2*time.Second {
			return sb, true, err
		}
		select {
		case <-r.ctx.Done():
			return nil, true, err
		case <-time.After(wait):
		}
	}
}

// scaledDownElsewhere reports whether the slot's shared sandbox ended
// because the leader scaled it down (it marks it before it removes it; the
// mark may reach this replica's view a moment after the removal did).
func (r *revisionRuntime) scaledDownElsewhere(s *slot) bool {
	for range 3 {
		if r.shared.ScaledDown(s.id) {
			return true
		}
		select {
		case <-r.ctx.Done():
			return false
		case <-time.After(250 * time.Millisecond):
		}
	}
	return false
}

// dropSlot forgets a slot the leader scaled down.
func (r *revisionRuntime) dropSlot(s *slot) {
	r.mu.Lock()
	if i := slices.Index(r.slots, s); i >= 0 {
		r.slots = slices.Delete(r.slots, i, i+1)
	}
	n := len(r.slots)
	r.mu.Unlock()
	r.app.logf(r.rev.Name, s.id, "replica stopping (scaled down by the leader)")
	r.log.Info("replica scaled down by the leader", "replica", s.id, "replicas", n)
	r.notify()
}

// serviceRunning reports whether err says that the service runs already:
// another Berth replica started the app in the shared sandbox.
func serviceRunning(err error) bool {
	var ae *agent.Error
	return errors.As(err, &ae) && ae.Status == 400 && strings.Contains(ae.Message, "is running")
}
