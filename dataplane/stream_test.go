package dataplane_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testutil"
)

// TestExecuteStreams: with Accept: application/x-ndjson, a synchronous
// execution's output comes as NDJSON lines while it runs (the first line
// is read while the command is still sleeping), then the answer's usual
// object; without it, the answer is the one JSON document it always was.
// A client that goes away mid-stream ends the execution.
func TestExecuteStreams(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "bwrap")
	base := poolServer(t)
	for _, tc := range []struct {
		name, path, body string
		stdout           func(final []byte) string
	}{
		{"code/execute python", "/pools/py/code/execute?identifier=stream-1",
			`{"properties":{"codeInputType":"inline","executionType":"synchronous","code":"import sys, time\nprint('one')\nprint('err', file=sys.stderr)\ntime.sleep(2)\nprint('two')"}}`,
			func(b []byte) string {
				var v struct {
					Properties struct{ Stdout, Stderr string }
				}
				_ = json.Unmarshal(b, &v)
				return v.Properties.Stdout + "|" + v.Properties.Stderr
			}},
		{"executions shell", "/pools/py/executions?identifier=stream-2&api-version=2025-02-02-preview",
			`{"codeInputType":"Inline","executionType":"Synchronous","shellCommand":"echo one; echo err >&2; sleep 2; echo two"}`,
			func(b []byte) string {
				var v struct {
					Status string
					Result struct{ Stdout, Stderr string }
				}
				_ = json.Unmarshal(b, &v)
				return v.Result.Stdout + "|" + v.Result.Stderr
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := post(t, context.Background(), base+tc.path, tc.body, "application/x-ndjson")
			defer res.Body.Close()
			if ct := res.Header.Get("Content-Type"); res.StatusCode != 200 || ct != "application/x-ndjson" {
				t.Fatalf("HTTP %d, Content-Type %q", res.StatusCode, ct)
			}
			lines, times := readLines(t, res.Body)
			if len(lines) < 3 {
				t.Fatalf("lines %q", lines)
			}
			// Output lines until "one\n" is complete, when "two" is not
			// printed yet; stderr has its own lines.
			var stdout, stderr string
			var one time.Time
			for i, l := range lines[:len(lines)-1] {
				var o struct{ Stdout, Stderr *string }
				if err := json.Unmarshal([]byte(l), &o); err != nil || (o.Stdout == nil) == (o.Stderr == nil) {
					t.Fatalf("line %q is not one stream's output", l)
				}
				if o.Stdout != nil {
					stdout += *o.Stdout
				} else {
					stderr += *o.Stderr
				}
				if one.IsZero() && strings.HasPrefix(stdout, "one\n") {
					one = times[i]
				}
			}
			if stdout != "one\ntwo\n" || stderr != "err\n" {
				t.Fatalf("streamed stdout %q, stderr %q", stdout, stderr)
			}
			if got := times[len(times)-1].Sub(one); got < time.Second {
				t.Fatalf("\"one\" came %v before the end: not while the command ran", got)
			}
			final := []byte(lines[len(lines)-1])
			if got := tc.stdout(final); got != "one\ntwo\n|err\n" {
				t.Fatalf("final line %s: stdout|stderr %q", final, got)
			}
		})
	}
	t.Run("no Accept: one JSON answer", func(t *testing.T) {
		res := post(t, context.Background(), base+"/pools/py/code/execute?identifier=stream-3",
			`{"properties":{"codeInputType":"inline","executionType":"synchronous","code":"print('one')"}}`, "application/json")
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if ct := res.Header.Get("Content-Type"); res.StatusCode != 200 || ct != "application/json; charset=utf-8" ||
			!strings.HasPrefix(string(b), `{"properties":{"status":"Success","stdout":"one\n"`) || strings.Count(string(b), "\n") != 1 {
			t.Fatalf("HTTP %d %q: %s", res.StatusCode, ct, b)
		}
	})
	t.Run("disconnect ends the execution", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		res := post(t, ctx, base+"/pools/py/executions?identifier=stream-4&api-version=2025-02-02-preview",
			`{"shellCommand":"echo one; sleep 60; echo two"}`, "application/x-ndjson")
		line, err := bufio.NewReader(res.Body).ReadString('\n')
		if err != nil || line != "{\"stdout\":\"one\\n\"}\n" {
			t.Fatalf("first line %q, %v", line, err)
		}
		cancel()
		res.Body.Close()
		// The session runs one execution at a time: the next one starts
		// only once the first has been killed.
		start := time.Now()
		r2 := post(t, context.Background(), base+"/pools/py/executions?identifier=stream-4&api-version=2025-02-02-preview",
			`{"shellCommand":"echo after"}`, "")
		b, _ := io.ReadAll(r2.Body)
		r2.Body.Close()
		if took := time.Since(start); took > 20*time.Second || !strings.Contains(string(b), `"stdout":"after\n"`) {
			t.Fatalf("next execution after %v: %s", took, b)
		}
	})
}

func post(t *testing.T, ctx context.Context, url, body, accept string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// readLines reads the NDJSON body, noting when each line arrived.
func readLines(t *testing.T, r io.Reader) (lines []string, at []time.Time) {
	t.Helper()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	for sc.Scan() {
		lines, at = append(lines, sc.Text()), append(at, time.Now())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines, at
}
