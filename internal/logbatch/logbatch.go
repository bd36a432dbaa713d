// Package logbatch batches log output: lines written to a Writer reach the
// underlying writer together, at most an interval after they were written
// (or sooner, when the batch fills up), instead of costing a write system
// call each. Berth uses it for access logs, a line per request, where one
// write per line is a measurable part of a proxied request's cost.
package logbatch

import (
	"errors"
	"io"
	"sync"
	"time"
)

// Options configure a Writer; the zero value means the defaults.
type Options struct {
	// Interval is the longest a line waits (default 100 ms).
	Interval time.Duration
	// Size is the batch size that is written at once (default 64 KiB).
	Size int
}

// Writer batches whole writes (log lines) for an underlying writer. It is
// safe for concurrent use. Close writes what is left and stops the flusher.
type Writer struct {
	dst  io.Writer
	o    Options
	mu   sync.Mutex
	buf  []byte
	err  error
	kick chan struct{}
	done chan struct{}
	wg   sync.WaitGroup
}

// New starts a Writer for dst.
func New(dst io.Writer, o Options) *Writer {
	if o.Interval <= 0 {
		o.Interval = 100 * time.Millisecond
	}
	if o.Size <= 0 {
		o.Size = 64 << 10
	}
	w := &Writer{dst: dst, o: o, buf: make([]byte, 0, o.Size), kick: make(chan struct{}, 1), done: make(chan struct{})}
	w.wg.Add(1)
	go w.flusher()
	return w
}

// Write appends p to the batch. A write larger than the batch goes out at
// once, after what was batched before it.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	if len(w.buf)+len(p) > w.o.Size {
		if err := w.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > w.o.Size {
			n, err := w.dst.Write(p)
			w.err = err
			return n, err
		}
	}
	first := len(w.buf) == 0
	w.buf = append(w.buf, p...)
	if first {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// Flush writes the batch now.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flushLocked()
}

func (w *Writer) flushLocked() error {
	if len(w.buf) == 0 || w.err != nil {
		return w.err
	}
	_, w.err = w.dst.Write(w.buf)
	w.buf = w.buf[:0]
	return w.err
}

// flusher writes a batch an interval after its first line.
func (w *Writer) flusher() {
	defer w.wg.Done()
	t := time.NewTimer(w.o.Interval)
	t.Stop()
	for {
		select {
		case <-w.done:
			return
		case <-w.kick:
			t.Reset(w.o.Interval)
			select {
			case <-w.done:
				return
			case <-t.C:
				_ = w.Flush()
			}
		}
	}
}

// Close writes what is left and stops the flusher; later writes fail.
func (w *Writer) Close() error {
	w.mu.Lock()
	select {
	case <-w.done:
		w.mu.Unlock()
		return nil
	default:
	}
	close(w.done)
	w.mu.Unlock()
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	err := w.flushLocked()
	if w.err == nil {
		w.err = errClosed
	}
	return err
}

var errClosed = errors.New("logbatch: write after Close")
