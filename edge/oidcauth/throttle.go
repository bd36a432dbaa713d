package oidcauth

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"
)

// throttle is the JWKS client's transport: it goes to the network for the
// JWKS at most once per interval and otherwise answers with the last
// document. go-oidc's remote key set refetches the JWKS whenever a token
// fails to verify with the cached keys (unknown kid, bad signature), so
// without this every forged token would cost a request to the issuer.
type throttle struct {
	next  http.RoundTripper
	url   string
	every time.Duration
	now   func() time.Time

	mu     sync.Mutex // guards the fields below (no I/O under it)
	last   time.Time
	status int
	header http.Header
	body   []byte
}

var errThrottled = errors.New("oidcauth: JWKS fetch throttled after a failure")

func (t *throttle) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet || req.URL.String() != t.url {
		return t.next.RoundTrip(req)
	}
	t.mu.Lock()
	if !t.last.IsZero() && t.now().Sub(t.last) < t.every {
		status, header, body := t.status, t.header, t.body
		t.mu.Unlock()
		if body == nil {
			return nil, errThrottled
		}
		return &http.Response{
			StatusCode: status, Status: http.StatusText(status), Header: header.Clone(),
			Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
			Request: req, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		}, nil
	}
	t.last = t.now()
	t.mu.Unlock()

	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusOK {
		t.mu.Lock()
		t.status, t.header, t.body = resp.StatusCode, resp.Header.Clone(), body
		t.mu.Unlock()
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}
