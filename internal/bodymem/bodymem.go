// Package bodymem bounds, server-wide, the memory that request bodies held
// in memory take. Each handler that reads a body whole has its own per-request
// limit; that alone lets many clients that each send most of a large body
// and stall hold as much memory as they like. A Budget is shared by all such
// handlers: bytes are reserved as they arrive, and a request that finds the
// budget spent is refused (503 with Retry-After) instead of growing the heap.
package bodymem

import (
	"errors"
	"io"
	"sync/atomic"
)

// DefaultBytes is the default budget.
const DefaultBytes = 256 << 20

// RetryAfter is what a refused client is told to wait, in seconds.
const RetryAfter = "2"

// ErrBusy is returned when the budget is spent.
var ErrBusy = errors.New("the server holds as many request bodies as it may: try again in a moment")

// Budget is a server-wide budget of body bytes. A nil *Budget has no limit.
type Budget struct {
	max  int64
	used atomic.Int64
}

// New returns a budget of max bytes (DefaultBytes if max <= 0).
func New(max int64) *Budget {
	if max <= 0 {
		max = DefaultBytes
	}
	return &Budget{max: max}
}

// Reserve takes n bytes from the budget, or reports false if they are not
// there.
func (b *Budget) Reserve(n int64) bool {
	if b == nil || n <= 0 {
		return true
	}
	if b.used.Add(n) > b.max {
		b.used.Add(-n)
		return false
	}
	return true
}

// Release gives n bytes back.
func (b *Budget) Release(n int64) {
	if b != nil && n > 0 {
		b.used.Add(-n)
	}
}

// Used is the number of bytes reserved now.
func (b *Budget) Used() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// Reader reserves the bytes read from r, which its reader holds in memory
// until Release. A read that finds the budget spent fails with ErrBusy.
type Reader struct {
	r        io.Reader
	b        *Budget
	reserved int64
	busy     bool
}

// NewReader returns a Reader of r under budget b.
func (b *Budget) NewReader(r io.Reader) *Reader { return &Reader{r: r, b: b} }

func (r *Reader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		if !r.b.Reserve(int64(n)) {
			r.busy = true
			return 0, ErrBusy
		}
		r.reserved += int64(n)
	}
	return n, err
}

// Busy reports whether a read found the budget spent.
func (r *Reader) Busy() bool { return r.busy }

// Close closes the underlying reader if it is an io.Closer.
func (r *Reader) Close() error {
	if c, ok := r.r.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// Release gives back what the reads reserved; call it once the bytes read
// are no longer held.
func (r *Reader) Release() {
	r.b.Release(r.reserved)
	r.reserved = 0
}
