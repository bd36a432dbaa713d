package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
)

// handlerTransport sends requests to an http.Handler in this process, the
// way a listener would hand them over, and streams its response back: the
// dashboard is a client of the same control API and data plane handlers
// that the CLI and SDKs reach over TCP.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	in := req.Clone(req.Context())
	in.RequestURI = req.URL.RequestURI()
	in.RemoteAddr = "127.0.0.1:0"
	if in.Body == nil {
		in.Body = http.NoBody
	}
	if in.Host == "" {
		in.Host = req.URL.Host
	}
	pr, pw := io.Pipe()
	rw := &pipeWriter{header: http.Header{}, pw: pw, ready: make(chan struct{})}
	// The goroutine ends when the handler does; a reader that closes the
	// body makes the handler's writes fail, so it ends too.
	go func() {
		defer func() {
			if p := recover(); p != nil {
				rw.WriteHeader(http.StatusInternalServerError)
				pw.CloseWithError(fmt.Errorf("handler panicked: %v", p))
				return
			}
			rw.WriteHeader(http.StatusOK)
			pw.Close()
		}()
		t.h.ServeHTTP(rw, in)
	}()
	select {
	case <-rw.ready:
	case <-req.Context().Done():
		pr.Close()
		return nil, req.Context().Err()
	}
	return &http.Response{
		Status: http.StatusText(rw.status), StatusCode: rw.status, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: rw.sent, Body: pr, Request: req, ContentLength: -1,
	}, nil
}

// pipeWriter is the handler's side of handlerTransport.
type pipeWriter struct {
	header http.Header
	sent   http.Header
	status int
	once   sync.Once
	ready  chan struct{}
	pw     *io.PipeWriter
}

func (w *pipeWriter) Header() http.Header { return w.header }

func (w *pipeWriter) WriteHeader(code int) {
	if code < 200 {
		return // informational responses are not passed on
	}
	w.once.Do(func() {
		w.status, w.sent = code, w.header.Clone()
		close(w.ready)
	})
}

func (w *pipeWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.pw.Write(p)
}

// Flush is a no-op: each Write reaches the reader directly.
func (w *pipeWriter) Flush() {}

// client calls the control API with the signed-in user's token, and a
// pool's data plane with the pool's key.
type client struct {
	api, plane *http.Client
	// publicHost is the Host the data plane's requests carry.
	publicHost string
}

// apiError is an error answer of either API.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("HTTP %d", e.Status)
	}
	return e.Message
}

func (c *client) do(ctx context.Context, hc *http.Client, method, url string, header http.Header, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	if res.StatusCode >= 400 {
		defer res.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
		var e struct {
			Error struct{ Code, Message string }
		}
		_ = json.Unmarshal(b, &e)
		return nil, &apiError{Status: res.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	}
	return res, nil
}

// call sends a control API request with token, and decodes the answer
// into out (if not nil).
func (c *client) call(ctx context.Context, token, method, path string, in, out any) error {
	var body io.Reader
	h := http.Header{"Authorization": {"Bearer " + token}}
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
		h.Set("Content-Type", "application/json")
	}
	res, err := c.do(ctx, c.api, method, "http://control"+path, h, body)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, res.Body)
		return nil
	}
	return json.NewDecoder(res.Body).Decode(out)
}

// stream opens a control API response to read as it comes.
func (c *client) stream(ctx context.Context, token, path string) (*http.Response, error) {
	return c.do(ctx, c.api, http.MethodGet, "http://control"+path, http.Header{"Authorization": {"Bearer " + token}}, nil)
}

// data sends a request to a pool's public data plane with its key.
func (c *client) data(ctx context.Context, key, method, path string, header http.Header, body io.Reader) (*http.Response, error) {
	h := http.Header{"X-Ms-Apikey": {key}}
	for k, v := range header {
		h[k] = v
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	return c.do(ctx, c.plane, method, "http://"+c.publicHost+path, h, body)
}
