// Package outqueue passes an execution's output, as it arrives, to a
// sender that may be slower than the execution (an MCP client's progress
// notifications, an HTTP response): events are queued without blocking
// the execution, and one goroutine sends them, coalescing whatever piled
// up while it was sending.
package outqueue

import (
	"sync"

	"github.com/berth-dev/berth/agent"
)

// SendFunc sends one chunk of a stream ("stdout" or "stderr"). After it
// fails once, the queue sends nothing more (the execution goes on).
type SendFunc func(stream, text string) error

// Queue holds output until its goroutine sends it. What it holds is
// bounded by the execution's output caps (the agent's sink and client cut
// each stream at its cap before OnEvent sees it).
type Queue struct {
	max  int
	send SendFunc

	mu      sync.Mutex
	pending []chunk
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

type chunk struct {
	stream string
	text   []byte
}

// Start starts the goroutine that sends, in chunks of at most max bytes
// (never splitting a UTF-8 sequence); Finish stops it.
func Start(max int, send SendFunc) *Queue {
	q := &Queue{max: max, send: send, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go q.run()
	return q
}

// OnEvent is the execution's OnEvent callback (nil-safe: a nil queue
// returns a nil callback).
func (q *Queue) OnEvent() func(agent.Event) {
	if q == nil {
		return nil
	}
	return func(e agent.Event) {
		q.mu.Lock()
		q.add("stdout", e.Stdout)
		q.add("stderr", e.Stderr)
		q.mu.Unlock()
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
}

func (q *Queue) add(stream, text string) {
	if text == "" {
		return
	}
	if n := len(q.pending); n > 0 && q.pending[n-1].stream == stream && len(q.pending[n-1].text)+len(text) <= q.max {
		q.pending[n-1].text = append(q.pending[n-1].text, text...)
		return
	}
	q.pending = append(q.pending, chunk{stream, []byte(text)})
}

// Finish sends what is left and waits, so that everything sent precedes
// what the caller writes next (nil-safe).
func (q *Queue) Finish() {
	if q == nil {
		return
	}
	close(q.stop)
	<-q.done
}

func (q *Queue) run() {
	defer close(q.done)
	failed := false
	for {
		stopping := false
		select {
		case <-q.wake:
		case <-q.stop:
			stopping = true
		}
		q.mu.Lock()
		batch := q.pending
		q.pending = nil
		q.mu.Unlock()
		for _, c := range batch {
			for text := c.text; len(text) > 0 && !failed; {
				n := cut(text, q.max)
				failed = q.send(c.stream, string(text[:n])) != nil
				text = text[n:]
			}
		}
		if stopping {
			return
		}
	}
}

// cut is how much of text to send at once: at most max bytes, not
// splitting a UTF-8 sequence if it can help it.
func cut(text []byte, max int) int {
	n := min(len(text), max)
	for n < len(text) && n > 0 && text[n]&0xC0 == 0x80 {
		n--
	}
	if n == 0 {
		n = min(len(text), max)
	}
	return n
}
