package outqueue

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/berth-dev/berth/agent"
)

type sent struct{ stream, text string }

func TestQueue(t *testing.T) {
	for _, tc := range []struct {
		name   string
		max    int
		events []agent.Event
		fail   int // the send that fails (1-based; 0: none)
		want   []sent
	}{
		{"in order", 64, []agent.Event{{Stdout: "a"}, {Stderr: "b"}, {Stdout: "c"}}, 0,
			nil}, // checked by concatenation below
		{"cut at max", 4, []agent.Event{{Stdout: "abcdefghij"}}, 0,
			[]sent{{"stdout", "abcd"}, {"stdout", "efgh"}, {"stdout", "ij"}}},
		{"never splits UTF-8", 4, []agent.Event{{Stdout: "abcé€"}}, 0,
			[]sent{{"stdout", "abc"}, {"stdout", "é"}, {"stdout", "€"}}},
		{"stops after a failed send", 2, []agent.Event{{Stdout: "abcdef"}}, 2,
			[]sent{{"stdout", "ab"}, {"stdout", "cd"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []sent
			q := Start(tc.max, func(stream, text string) error {
				got = append(got, sent{stream, text})
				if len(got) == tc.fail {
					return errors.New("gone")
				}
				return nil
			})
			on := q.OnEvent()
			for _, e := range tc.events {
				on(e)
			}
			q.Finish()
			if tc.want == nil {
				var out, errs strings.Builder
				for _, s := range got {
					if s.stream == "stdout" {
						out.WriteString(s.text)
					} else {
						errs.WriteString(s.text)
					}
				}
				if out.String() != "ac" || errs.String() != "b" {
					t.Fatalf("stdout %q, stderr %q", out.String(), errs.String())
				}
				return
			}
			if len(got) != len(tc.want) {
				t.Fatalf("sent %q, want %q", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] || !utf8.ValidString(got[i].text) {
					t.Fatalf("sent %q, want %q", got, tc.want)
				}
			}
		})
	}
	var nilQueue *Queue
	if nilQueue.OnEvent() != nil {
		t.Fatal("a nil queue's OnEvent is not nil")
	}
	nilQueue.Finish()
}
