package gateway

import (
	"bytes"
	"encoding/json"
)

// responseSpotter reads an SSE stream as it passes and spots the event
// that carries a JSON-RPC response: in MCP's streamable HTTP transport, the
// stream a server opens for a POSTed request ends once the request's
// response is sent.
type responseSpotter struct {
	buf []byte // the start of an event whose end has not come yet
	off bool   // gave up: an event too large to look at
}

// maxSpottedEvent bounds the bytes held to look at one event; a larger
// event is not looked at, and the stream is then flushed as it comes.
const maxSpottedEvent = 1 << 20

// feed reads the next bytes of the stream and says whether an event among
// them was a JSON-RPC response.
func (s *responseSpotter) feed(p []byte) bool {
	if s.off {
		return false
	}
	s.buf = append(s.buf, p...)
	for {
		ev, rest, ok := cutEvent(s.buf)
		if !ok {
			if len(s.buf) > maxSpottedEvent {
				s.buf, s.off = nil, true
			}
			return false
		}
		if isResponse(ev) {
			s.buf = nil
			return true
		}
		s.buf = append(s.buf[:0], rest...)
	}
}

// cutEvent splits off the first event of an SSE stream: events end with a
// blank line, in any of the line endings SSE allows.
func cutEvent(b []byte) (ev, rest []byte, ok bool) {
	for i := 0; i < len(b); i++ {
		if b[i] != '\n' && b[i] != '\r' {
			continue
		}
		j := i + 1
		if b[i] == '\r' && j < len(b) && b[j] == '\n' {
			j++
		}
		if j < len(b) && (b[j] == '\n' || b[j] == '\r') {
			k := j + 1
			if b[j] == '\r' && k < len(b) && b[k] == '\n' {
				k++
			}
			return b[:i], b[k:], true
		}
	}
	return nil, b, false
}

// isResponse says whether an SSE event's data is a JSON-RPC response: an
// id, a result or an error, and no method.
func isResponse(ev []byte) bool {
	var data []byte
	for len(ev) > 0 {
		line := ev
		if i := bytes.IndexAny(ev, "\r\n"); i >= 0 {
			line, ev = ev[:i], bytes.TrimLeft(ev[i:], "\r\n")
		} else {
			ev = nil
		}
		if v, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			if data != nil {
				data = append(data, '\n')
			}
			data = append(data, bytes.TrimPrefix(v, []byte(" "))...)
		}
	}
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Method *string         `json:"method"`
		Result json.RawMessage `json:"result"`
		Error  json.RawMessage `json:"error"`
	}
	if len(data) == 0 || json.Unmarshal(data, &msg) != nil {
		return false
	}
	return msg.Method == nil && msg.ID != nil && (msg.Result != nil || msg.Error != nil)
}
