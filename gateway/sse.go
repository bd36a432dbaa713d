package gateway

import (
	"bytes"
	"encoding/json"
)

// responseSpotter reads an SSE stream as it passes and spots the event
// that carries a JSON-RPC response: in MCP's streamable HTTP transport, the
// stream a server opens for a POSTed request ends once the request's
// response is sent.
//
// It looks at each byte of the stream once, however the stream is cut into
// writes: an app that drips an event a few bytes at a time must not make it
// rescan what it holds (work quadratic in the event's size).
type responseSpotter struct {
	buf  []byte // the start of an event whose end has not come yet
	scan int    // buf[:scan] holds no event end (a blank line) that is complete
	off  bool   // gave up: an event too large to look at
	// work counts the bytes looked at or moved, which tests bound.
	work int
}

// maxSpottedEvent bounds the bytes held to look at one event; a larger
// event is not looked at, and the stream is then flushed as it comes.
const maxSpottedEvent = 1 << 20

// maxEventEnd is the longest blank line that ends an event ("\r\n\r\n").
const maxEventEnd = 4

// feed reads the next bytes of the stream and says whether an event among
// them was a JSON-RPC response.
func (s *responseSpotter) feed(p []byte) bool {
	if s.off {
		return false
	}
	s.buf = append(s.buf, p...)
	start := 0 // the first byte of the event being read
	for {
		end, next, ok := eventEnd(s.buf, max(start, s.scan))
		if !ok {
			break
		}
		s.work += end - max(start, s.scan)
		if isResponse(s.buf[start:end]) {
			s.buf, s.scan = s.buf[:0], 0
			return true
		}
		start, s.scan = next, next
	}
	// Not one complete event more: the bytes before the last few (a blank
	// line may be cut between writes) need no second look.
	from := max(start, s.scan)
	s.scan = max(from, len(s.buf)-(maxEventEnd-1))
	s.work += len(s.buf) - from
	if start > 0 {
		n := copy(s.buf, s.buf[start:])
		s.buf = s.buf[:n]
		s.scan -= start
		s.work += n
	}
	if len(s.buf) > maxSpottedEvent {
		s.buf, s.scan, s.off = nil, 0, true
	}
	return false
}

// eventEnd finds the first end of an SSE event in b at or after from:
// events end with a blank line, in any of the line endings SSE allows. The
// event is b[:end] (from its start), and the next one starts at next.
func eventEnd(b []byte, from int) (end, next int, ok bool) {
	for i := from; i < len(b); i++ {
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
			return i, k, true
		}
	}
	return 0, 0, false
}

// isResponse says whether an SSE event's data is a JSON-RPC response: an
// id, a result or an error, and no method.
func isResponse(ev []byte) bool {
	data := eventData(ev)
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

// eventData is the data of an SSE event: its data lines, joined.
func eventData(ev []byte) []byte {
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
	return data
}
