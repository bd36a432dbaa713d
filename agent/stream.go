package agent

import (
	"bytes"
	"context"
	"io"
	"sync"
	"unicode/utf8"
)

// stream turns a pipe into a channel of chunks read by a goroutine that ends
// when the pipe does, and scans it for the end-of-execution markers that the
// persistent interpreters write.
type stream struct {
	ch      chan []byte
	pending []byte
	r       io.ReadCloser
	done    chan struct{}
	once    sync.Once
}

func newStream(r io.ReadCloser) *stream {
	s := &stream{ch: make(chan []byte, 16), r: r, done: make(chan struct{})}
	go func() {
		defer close(s.ch)
		for {
			buf := make([]byte, 32<<10)
			n, err := r.Read(buf)
			if n > 0 {
				select {
				case s.ch <- buf[:n]:
				case <-s.done:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return s
}

// close stops reading and releases the pipe.
func (s *stream) close() {
	s.once.Do(func() {
		close(s.done)
		s.r.Close()
	})
}

// until passes output to emit until it finds prefix followed by a payload and
// a NUL byte, and returns the payload. Bytes after the marker stay pending for
// the next execution. It returns io.EOF if the pipe ends first.
func (s *stream) until(ctx context.Context, prefix []byte, emit func([]byte)) ([]byte, error) {
	for {
		if i := bytes.Index(s.pending, prefix); i >= 0 {
			emit(s.pending[:i])
			s.pending = s.pending[i:]
			if j := bytes.IndexByte(s.pending[len(prefix):], 0); j >= 0 {
				payload := bytes.Clone(s.pending[len(prefix) : len(prefix)+j])
				s.pending = s.pending[len(prefix)+j+1:]
				return payload, nil
			}
		} else {
			// Hold back only what could be the start of a marker split
			// across reads: from a NUL byte (markers start with one) near
			// the end. Plain output streams out at once.
			cut := len(s.pending)
			if i := bytes.LastIndexByte(s.pending, 0); i >= 0 && len(s.pending)-i < len(prefix) {
				cut = i
			}
			emit(s.pending[:cut])
			s.pending = s.pending[cut:]
		}
		select {
		case chunk, ok := <-s.ch:
			if !ok {
				emit(s.pending)
				s.pending = nil
				return nil, io.EOF
			}
			s.pending = append(s.pending, chunk...)
		case <-ctx.Done():
			// No marker is coming: what was held back is output too.
			emit(s.pending)
			s.pending = nil
			return nil, ctx.Err()
		}
	}
}

// drain passes everything to emit until the pipe ends.
func (s *stream) drain(ctx context.Context, emit func([]byte)) error {
	emit(s.pending)
	s.pending = nil
	for {
		select {
		case chunk, ok := <-s.ch:
			if !ok {
				return nil
			}
			emit(chunk)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// sink receives an execution's output from two goroutines, enforces the
// per-stream cap and forwards events in order to the client.
type sink struct {
	mu        sync.Mutex
	max       int64
	sent      [2]int64
	truncated [2]bool
	carry     [2][]byte // an incomplete UTF-8 sequence held for the next write
	send      func(Event)
}

func (k *sink) write(stderr bool, p []byte) {
	if len(p) == 0 {
		return
	}
	i := 0
	if stderr {
		i = 1
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if c := k.carry[i]; len(c) > 0 {
		p = append(c, p...)
		k.carry[i] = nil
	}
	// Never split a UTF-8 sequence across two events.
	if cut := incompleteSuffix(p); cut > 0 {
		k.carry[i] = bytes.Clone(p[len(p)-cut:])
		p = p[:len(p)-cut]
	}
	k.emit(i, p)
}

func (k *sink) emit(i int, p []byte) {
	if len(p) == 0 {
		return
	}
	room := k.max - k.sent[i]
	if room <= 0 {
		k.truncated[i] = true
		return
	}
	if int64(len(p)) > room {
		p = p[:room]
		k.truncated[i] = true
	}
	k.sent[i] += int64(len(p))
	if i == 1 {
		k.send(Event{Stderr: string(p)})
	} else {
		k.send(Event{Stdout: string(p)})
	}
}

// incompleteSuffix returns the length of a truncated UTF-8 sequence at the end
// of p, or 0.
func incompleteSuffix(p []byte) int {
	for n := 1; n < utf8.UTFMax && n <= len(p); n++ {
		b := p[len(p)-n]
		if utf8.RuneStart(b) {
			if !utf8.FullRune(p[len(p)-n:]) {
				return n
			}
			return 0
		}
	}
	return 0
}

func (k *sink) stdout(p []byte) { k.write(false, p) }
func (k *sink) stderr(p []byte) { k.write(true, p) }

func (k *sink) finish(r *Result) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for i := range k.carry {
		k.emit(i, k.carry[i])
		k.carry[i] = nil
	}
	r.StdoutTruncated, r.StderrTruncated = k.truncated[0], k.truncated[1]
}
