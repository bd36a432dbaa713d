package stdiobridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// A session is one MCP session: one process of the stdio server, the
// go-sdk's streamable transport for its HTTP side, and two relay goroutines.
type session struct {
	h      *Handler
	id     string
	client string // ClientKey of the request that created it
	log    *slog.Logger

	ctx    context.Context // cancelled after the session has ended
	cancel context.CancelFunc

	proc      Process
	transport *mcp.StreamableServerTransport
	httpConn  mcp.Connection // client side: messages from/to HTTP requests
	stdioConn mcp.Connection // server side: the process's stdin/stdout
	initID    jsonrpc.ID     // ID of the initialize request that started the session

	mu          sync.Mutex
	initialized bool   // the server answered initialize with a result
	established bool   // a request of the session came after initialize
	version     string // the protocol version it answered with
	// pending holds the IDs of client requests the server has not answered,
	// so that they can be failed if the process ends.
	pending map[jsonrpc.ID]struct{}
	refs    int         // POST requests in progress
	timer   *time.Timer // idle timer; nil if none or stopped for good

	closeOnce sync.Once
	closing   chan struct{} // closed when the session starts ending
	done      chan struct{} // closed when it has ended
}

func (s *session) isInitialized() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.initialized
}

func (s *session) negotiatedVersion() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

// idleTimeout is how long the session may idle now: InitTimeout until the
// client has come back after initialize, IdleTimeout after.
func (s *session) idleTimeout() time.Duration {
	if s.established || s.h.o.InitTimeout < 0 {
		return s.h.o.IdleTimeout
	}
	if s.h.o.IdleTimeout > 0 {
		return min(s.h.o.InitTimeout, s.h.o.IdleTimeout)
	}
	return s.h.o.InitTimeout
}

// establish records that the client came back with the session's id.
func (s *session) establish() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.established = true
}

// startRequest pauses the idle timer while a POST is in progress.
func (s *session) startRequest() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer == nil {
		return
	}
	if s.refs == 0 {
		s.timer.Stop()
	}
	s.refs++
}

// endRequest restarts the idle timer when the last POST in progress ends.
func (s *session) endRequest() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer == nil {
		return
	}
	s.refs--
	if s.refs == 0 {
		if d := s.idleTimeout(); d > 0 {
			s.timer.Reset(d)
		}
	}
}

func (s *session) isClosing() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// clientToServer copies messages the client POSTs to the server's stdin.
func (s *session) clientToServer() {
	defer s.h.relays.Done()
	for {
		msg, err := s.httpConn.Read(s.ctx)
		if err != nil {
			// io.EOF: the session is ending.
			s.close("HTTP connection closed")
			return
		}
		if req, ok := msg.(*jsonrpc.Request); ok && req.IsCall() {
			s.mu.Lock()
			s.pending[req.ID] = struct{}{}
			s.mu.Unlock()
		}
		if err := s.stdioConn.Write(s.ctx, msg); err != nil {
			if !s.isClosing() {
				s.serverGone(fmt.Sprintf("writing to the MCP server: %v", err))
			}
			return
		}
	}
}

// serverToClient copies messages from the server's stdout to the client:
// responses to the HTTP requests that carried their requests, everything
// else to the client's GET stream (or the event store until it opens one).
func (s *session) serverToClient() {
	defer s.h.relays.Done()
	for {
		msg, err := s.stdioConn.Read(s.ctx)
		if err != nil {
			if s.isClosing() {
				return
			}
			why := "the MCP server process ended"
			if !errors.Is(err, io.EOF) {
				why = fmt.Sprintf("reading from the MCP server: %v", err)
			}
			s.serverGone(why)
			return
		}
		if resp, ok := msg.(*jsonrpc.Response); ok {
			s.answered(resp)
		}
		if err := s.httpConn.Write(s.ctx, msg); err != nil {
			if s.isClosing() {
				return
			}
			// The transport could not deliver or store it (for example a
			// response to a request whose stream is gone); the session
			// itself is fine.
			s.log.Warn("stdiobridge: undeliverable server message", "error", err)
		}
	}
}

// serverGone ends the session after its server has exited or failed.
func (s *session) serverGone(why string) {
	s.log.Info("stdiobridge: " + why)
	// New requests get 404 from now on. Requests the server will never
	// answer get an error response, and a moment to reach the client before
	// the session's streams are torn down.
	s.h.remove(s)
	if s.failPending(why) > 0 {
		time.Sleep(failGrace)
	}
	s.close(why)
}

// answered records a response of the server, noting the outcome of
// initialize. It only reads the message.
func (s *session) answered(resp *jsonrpc.Response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pending, resp.ID)
	if resp.ID == s.initID && !s.initialized && resp.Error == nil {
		s.initialized = true
		var r struct {
			ProtocolVersion string `json:"protocolVersion"`
		}
		if json.Unmarshal(resp.Result, &r) == nil {
			s.version = r.ProtocolVersion
		}
	}
}

// failGrace is how long a session whose server has ended stays open after
// its pending requests have been failed, so that clients read those errors
// before their streams end.
const failGrace = 100 * time.Millisecond

// failPending answers the client requests the server will never answer, and
// returns how many there were.
func (s *session) failPending(why string) int {
	s.mu.Lock()
	ids := make([]jsonrpc.ID, 0, len(s.pending))
	for id := range s.pending {
		ids = append(ids, id)
	}
	clear(s.pending)
	s.mu.Unlock()
	for _, id := range ids {
		resp := &jsonrpc.Response{ID: id, Error: &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: why}}
		if err := s.httpConn.Write(s.ctx, resp); err != nil {
			s.log.Debug("stdiobridge: failing pending request", "id", id.Raw(), "error", err)
		}
	}
	return len(ids)
}

// close ends the session: later requests get 404, hanging requests end, and
// the process is closed. It returns when all that is done, also when another
// goroutine is already closing the session.
func (s *session) close(reason string) {
	s.closeOnce.Do(func() {
		close(s.closing)
		s.h.remove(s)
		s.mu.Lock()
		if s.timer != nil {
			s.timer.Stop()
			s.timer = nil
		}
		s.mu.Unlock()
		s.httpConn.Close()
		s.stdioConn.Close()
		if err := s.proc.Close(); err != nil {
			s.log.Warn("stdiobridge: closing the process", "error", err)
		}
		s.cancel()
		s.log.Info("stdiobridge: session ended", "reason", reason)
		close(s.done)
	})
	<-s.done
}
