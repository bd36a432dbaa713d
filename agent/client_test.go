package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeAgent serves h on a real Unix socket: an agent that sandboxed code
// might put in place of the real one.
func fakeAgent(t *testing.T, h http.HandlerFunc) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	c := UnixClient(sock)
	t.Cleanup(c.Close)
	return c
}

// shorten makes the client's waits short for the duration of a test.
func shorten(t *testing.T) {
	grace, answer := ExecGrace, AnswerTimeout
	ExecGrace, AnswerTimeout = 200*time.Millisecond, 300*time.Millisecond
	t.Cleanup(func() { ExecGrace, AnswerTimeout = grace, answer })
}

// flood writes events of chunk bytes of output until n bytes are sent (n <
// 0: until the client leaves), then the result unless noResult.
func flood(n int64, noResult bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		ev, _ := json.Marshal(Event{Stdout: strings.Repeat("x", 32<<10)})
		ev = append(ev, '\n')
		for sent := int64(0); n < 0 || sent < n; sent += 32 << 10 {
			if _, err := w.Write(ev); err != nil {
				return
			}
		}
		if !noResult {
			_ = json.NewEncoder(w).Encode(Event{Result: &Result{Status: StatusSuccess}})
		}
	}
}

func TestClientAgainstHostileAgent(t *testing.T) {
	shorten(t)
	req := ExecRequest{Language: Shell, Code: "x", TimeoutMillis: 100}
	for _, c := range []struct {
		name  string
		agent http.HandlerFunc
		call  func(*Client) error
		// check, if set, judges a call that succeeded.
		check func(c *Client) error
	}{
		{name: "24 MiB of output is cut at the cap", agent: flood(24<<20, false), check: func(c *Client) error {
			var streamed int
			long := req
			long.TimeoutMillis = 20000
			out, err := c.Exec(context.Background(), long, func(e Event) { streamed += len(e.Stdout) })
			if err != nil {
				return err
			}
			if len(out.Stdout) != DefaultMaxOutputBytes || !out.StdoutTruncated || streamed != DefaultMaxOutputBytes {
				return fmt.Errorf("kept %d bytes (streamed %d), truncated=%v", len(out.Stdout), streamed, out.StdoutTruncated)
			}
			return nil
		}},
		{name: "endless output", agent: flood(-1, true), call: func(c *Client) error {
			_, err := c.Exec(context.Background(), req, nil)
			return err
		}},
		{name: "output past what the cap allows", agent: flood(200<<20, false), call: func(c *Client) error {
			_, err := c.Exec(context.Background(), req, nil)
			return err
		}},
		{name: "a huge line", agent: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, `{"stdout":"`)
			for range 40 {
				if _, err := w.Write(make([]byte, 1<<20)); err != nil {
					return
				}
			}
		}, call: func(c *Client) error {
			_, err := c.Exec(context.Background(), req, nil)
			return err
		}},
		{name: "malformed event", agent: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "not json\n")
		}, call: func(c *Client) error {
			_, err := c.Exec(context.Background(), req, nil)
			return err
		}},
		{name: "stream ends without a result", agent: flood(64<<10, true), call: func(c *Client) error {
			_, err := c.Exec(context.Background(), req, nil)
			return err
		}},
		{name: "a stream that never ends", agent: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			for {
				if _, err := io.WriteString(w, "{}\n"); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				time.Sleep(10 * time.Millisecond)
			}
		}, call: func(c *Client) error {
			_, err := c.Exec(context.Background(), req, nil)
			return err
		}},
		{name: "no headers ever", agent: func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		}, call: func(c *Client) error {
			_, err := c.Exec(context.Background(), req, nil)
			return err
		}},
		{name: "huge headers", agent: func(w http.ResponseWriter, r *http.Request) {
			for i := range 200 {
				w.Header().Set(fmt.Sprintf("X-%d", i), strings.Repeat("h", 4<<10))
			}
			w.WriteHeader(http.StatusOK)
		}, check: func(c *Client) error {
			// Go's transport refuses them (the agent is unavailable).
			if err := c.Ping(context.Background()); !errors.Is(err, ErrUnavailable) {
				return fmt.Errorf("ping: %v", err)
			}
			return nil
		}},
		{name: "giant file list", agent: func(w http.ResponseWriter, r *http.Request) {
			bw := bufio.NewWriter(w)
			_, _ = bw.WriteString("[")
			for i := range 2_000_000 {
				if i > 0 {
					_ = bw.WriteByte(',')
				}
				if _, err := fmt.Fprintf(bw, `{"name":"f%d","size":1}`, i); err != nil {
					return
				}
			}
			_, _ = bw.WriteString("]")
			_ = bw.Flush()
		}, call: func(c *Client) error {
			_, err := c.List(context.Background(), "")
			return err
		}},
		{name: "too many files", agent: func(w http.ResponseWriter, r *http.Request) {
			list := make([]FileInfo, MaxListEntries+1)
			_ = json.NewEncoder(w).Encode(list)
		}, call: func(c *Client) error {
			_, err := c.List(context.Background(), "")
			return err
		}},
		{name: "a list that stalls", agent: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "[")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}, call: func(c *Client) error {
			_, err := c.List(context.Background(), "")
			return err
		}},
		{name: "ping that stalls", agent: func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		}, call: func(c *Client) error { return c.Ping(context.Background()) }},
		{name: "file content of unknown length", agent: func(w http.ResponseWriter, r *http.Request) {
			for range 100 {
				_, _ = w.Write(make([]byte, 64<<10))
			}
		}, call: func(c *Client) error {
			_, _, err := c.Open(context.Background(), "f")
			return err
		}},
		{name: "huge error body", agent: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNotFound)
			_ = json.NewEncoder(w).Encode(ErrorBody{Code: CodeNotFound, Message: strings.Repeat("m", 1<<20)})
		}, check: func(c *Client) error {
			err := c.Remove(context.Background(), "f")
			var ae *Error
			if !errors.As(err, &ae) || len(ae.Message) > 4<<10 {
				return fmt.Errorf("error: %T, %d bytes", err, len(fmt.Sprint(err)))
			}
			return nil
		}},
		{name: "an error message with a long valid JSON body", agent: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(ErrorBody{Code: CodeBadRequest, Message: strings.Repeat("é", 10<<10)})
		}, check: func(c *Client) error {
			err := c.Remove(context.Background(), "f")
			var ae *Error
			if !errors.As(err, &ae) || len(ae.Message) > 4<<10 || !errors.Is(err, ErrBadRequest) {
				return fmt.Errorf("error: %.200v", err)
			}
			return nil
		}},
		{name: "an endless log line", agent: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, `{"line":"`)
			for range 100 {
				if _, err := w.Write(make([]byte, 64<<10)); err != nil {
					return
				}
			}
		}, call: func(c *Client) error {
			return c.ServiceLogs(context.Background(), "app", true, func(LogLine) {})
		}},
		{name: "an upgrade that stalls", agent: func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		}, check: func(c *Client) error {
			if _, err := c.Attach(context.Background(), "x"); !errors.Is(err, ErrUnavailable) {
				return fmt.Errorf("attach: %v", err)
			}
			return nil
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			client := fakeAgent(t, c.agent)
			done := make(chan error, 1)
			go func() {
				if c.check != nil {
					done <- c.check(client)
					return
				}
				err := c.call(client)
				if !errors.Is(err, ErrProtocol) || !errors.Is(err, ErrUnavailable) {
					err = fmt.Errorf("want a protocol violation, got %.200v", err)
				} else {
					err = nil
				}
				done <- err
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Error(err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the client did not give up on the agent")
			}
		})
	}
}

// An agent that stopped listening is a protocol violation: nothing can
// answer there again.
func TestClientAgentGone(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	c := UnixClient(sock)
	defer c.Close()
	if err := c.Ping(context.Background()); !errors.Is(err, ErrProtocol) {
		t.Fatalf("ping: %v", err)
	}
	if _, err := c.Attach(context.Background(), "x"); !errors.Is(err, ErrProtocol) {
		t.Fatalf("attach: %v", err)
	}
}

// An honest agent's answers pass: a Python result with a large value, and
// output right at the cap.
func TestClientHonestAgent(t *testing.T) {
	value, _ := json.Marshal(strings.Repeat("v", 4<<20))
	c := fakeAgent(t, func(w http.ResponseWriter, r *http.Request) {
		enc := json.NewEncoder(w)
		_ = enc.Encode(Event{Stdout: "héllo "})
		_ = enc.Encode(Event{Stderr: "warn"})
		_ = enc.Encode(Event{Result: &Result{Status: StatusSuccess, Value: value}})
	})
	out, err := c.Exec(context.Background(), ExecRequest{Language: Python, Code: "x", MaxOutputBytes: 6}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if out.Stdout != "héllo" || !out.StdoutTruncated || out.Stderr != "warn" || out.StderrTruncated || len(out.Value) != len(value) {
		t.Fatalf("got %q (%v) %q (%v), value of %d bytes", out.Stdout, out.StdoutTruncated, out.Stderr, out.StderrTruncated, len(out.Value))
	}
}
