package gateway

import (
	"strings"
	"testing"
)

// TestResponseSpotterWorkIsLinear: however an app cuts its stream into
// writes (an event dripped a few bytes at a time, or thousands of events
// in one write), the spotter looks at each byte a bounded number of times.
func TestResponseSpotterWorkIsLinear(t *testing.T) {
	notification := "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n"
	big := "data: " + strings.Repeat("x", 256<<10) + "\n\n"
	for _, tc := range []struct {
		name   string
		stream string
		piece  int // bytes per write
	}{
		{"a large event dripped 16 bytes at a time", big + responseEvent, 16},
		{"100k events, one write each", strings.Repeat(notification, 100_000) + responseEvent, len(notification)},
		{"100k events dripped 7 bytes at a time", strings.Repeat(notification, 100_000) + responseEvent, 7},
		{"events in 32 KiB writes", strings.Repeat(":\n\n", 200_000) + responseEvent, 32 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s responseSpotter
			found := false
			b := []byte(tc.stream)
			for len(b) > 0 && !found {
				n := min(tc.piece, len(b))
				found = s.feed(b[:n])
				b = b[n:]
			}
			if !found || len(b) != 0 {
				t.Fatalf("the response event was not spotted at the end of the stream (found %v, %d bytes left)", found, len(b))
			}
			if limit := 4 * len(tc.stream); s.work > limit {
				t.Fatalf("looked at %d bytes for a %d-byte stream (limit %d): the scan is not incremental", s.work, len(tc.stream), limit)
			}
		})
	}
}

// TestEventEndAcrossWrites: a blank line cut between writes, in any line
// ending SSE allows, still ends the event.
func TestEventEndAcrossWrites(t *testing.T) {
	for _, sep := range []string{"\n\n", "\r\r", "\r\n\r\n", "\n\r\n", "\r\n\n"} {
		stream := "data: " + `{"jsonrpc":"2.0","id":1,"result":{}}` + sep
		for piece := 1; piece <= len(stream); piece++ {
			var s responseSpotter
			found := false
			for b := []byte(stream); len(b) > 0; {
				n := min(piece, len(b))
				found = found || s.feed(b[:n])
				b = b[n:]
			}
			if !found {
				t.Errorf("separator %q, %d-byte writes: response not spotted", sep, piece)
			}
		}
	}
}
