// Package events keeps the server's recent events (deploys, crashes,
// scale-downs, ended sessions, key rotations) in a bounded in-memory ring,
// newest last, for GET /v1/events and the dashboard.
package events

import (
	"sync"
	"time"
)

// DefaultSize is how many events a Ring keeps by default.
const DefaultSize = 1000

// Event is one thing that happened.
type Event struct {
	// Seq numbers events from 1 in the order they were added.
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// Kind is a short word: deploy, crash, scale-down, ready, traffic,
	// key-rotated, pool-created, pool-updated, pool-deleted, app-deleted,
	// session-ended.
	Kind     string `json:"kind"`
	App      string `json:"app,omitempty"`
	Pool     string `json:"pool,omitempty"`
	Revision string `json:"revision,omitempty"`
	Replica  string `json:"replica,omitempty"`
	Session  string `json:"session,omitempty"`
	Message  string `json:"message"`
}

// Ring holds the last events. A nil *Ring drops what it is given, so
// owners can leave it unset.
type Ring struct {
	mu   sync.Mutex
	buf  []Event
	next int
	full bool
	seq  uint64
}

// New returns a ring of size events (DefaultSize if size <= 0).
func New(size int) *Ring {
	if size <= 0 {
		size = DefaultSize
	}
	return &Ring{buf: make([]Event, size)}
}

// Add records e, stamping its Seq (and Time, if zero).
func (r *Ring) Add(e Event) {
	if r == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Time = e.Time.UTC()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	e.Seq = r.seq
	r.buf[r.next] = e
	r.next = (r.next + 1) % len(r.buf)
	if r.next == 0 {
		r.full = true
	}
}

// Filter selects events; its zero value selects all.
type Filter struct {
	// App and Pool, if set, keep only that app's or pool's events.
	App, Pool string
	// After keeps events with a greater Seq.
	After uint64
	// Limit keeps the newest Limit events (0: all).
	Limit int
}

func (f Filter) match(e Event) bool {
	return e.Seq > f.After && (f.App == "" || e.App == f.App) && (f.Pool == "" || e.Pool == f.Pool)
}

// List returns the events f selects, oldest first.
func (r *Ring) List(f Filter) []Event {
	out := []Event{}
	if r == nil {
		return out
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.next
	if r.full {
		n = len(r.buf)
	}
	start := (r.next - n + len(r.buf)) % len(r.buf)
	for i := range n {
		if e := r.buf[(start+i)%len(r.buf)]; f.match(e) {
			out = append(out, e)
		}
	}
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[len(out)-f.Limit:]
	}
	return out
}
