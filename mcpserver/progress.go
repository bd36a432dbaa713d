package mcpserver

import (
	"context"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/berth-dev/berth/agent"
)

// maxProgressMessage bounds the text of one progress notification.
const maxProgressMessage = 64 << 10

// MetaStream is the _meta key of a progress notification that names the
// stream ("stdout" or "stderr") its message came from.
const MetaStream = "berth.dev/stream"

// progress streams an execution's output to the client as progress
// notifications on the tool call's own response stream. Output events are
// queued without blocking the execution; one goroutine sends them,
// coalescing whatever piled up while it was sending. The progress value is
// the number of output bytes sent so far (it only grows); the message is
// the chunk of output.
type progress struct {
	ctx   context.Context
	ss    *mcp.ServerSession
	token any

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

// startProgress returns nil when the request has no progress token.
func startProgress(ctx context.Context, req *mcp.CallToolRequest) *progress {
	token := req.Params.GetProgressToken()
	if token == nil || req.Session == nil {
		return nil
	}
	p := &progress{
		ctx: ctx, ss: req.Session, token: token,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	go p.run()
	return p
}

// onEvent is the execution's OnEvent callback (nil-safe: a nil progress
// returns a nil callback).
func (p *progress) onEvent() func(agent.Event) {
	if p == nil {
		return nil
	}
	return func(e agent.Event) {
		p.mu.Lock()
		p.add("stdout", e.Stdout)
		p.add("stderr", e.Stderr)
		p.mu.Unlock()
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

func (p *progress) add(stream, text string) {
	if text == "" {
		return
	}
	if n := len(p.pending); n > 0 && p.pending[n-1].stream == stream && len(p.pending[n-1].text)+len(text) <= maxProgressMessage {
		p.pending[n-1].text = append(p.pending[n-1].text, text...)
		return
	}
	p.pending = append(p.pending, chunk{stream, []byte(text)})
}

// finish sends what is left and waits, so that every notification precedes
// the tool's result.
func (p *progress) finish() {
	if p == nil {
		return
	}
	close(p.stop)
	<-p.done
}

func (p *progress) run() {
	defer close(p.done)
	var sent float64
	failed := false
	for {
		stopping := false
		select {
		case <-p.wake:
		case <-p.stop:
			stopping = true
		}
		p.mu.Lock()
		batch := p.pending
		p.pending = nil
		p.mu.Unlock()
		for _, c := range batch {
			for text := c.text; len(text) > 0 && !failed; {
				n := min(len(text), maxProgressMessage)
				// Do not split a UTF-8 sequence between two messages.
				for n < len(text) && n > 0 && text[n]&0xC0 == 0x80 {
					n--
				}
				if n == 0 {
					n = min(len(text), maxProgressMessage)
				}
				sent += float64(n)
				err := p.ss.NotifyProgress(p.ctx, &mcp.ProgressNotificationParams{
					Meta:          mcp.Meta{MetaStream: c.stream},
					ProgressToken: p.token,
					Progress:      sent,
					Message:       string(text[:n]),
				})
				// A client that went away gets no more; the execution goes on.
				failed = err != nil
				text = text[n:]
			}
		}
		if stopping {
			return
		}
	}
}
