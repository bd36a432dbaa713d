package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
)

// Error is an error reported by the agent.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return "agent: " + e.Message }

// Sentinel errors matched by errors.Is against an *Error.
var (
	ErrNotFound   = errors.New("not found")
	ErrBadRequest = errors.New("bad request")
	// ErrDiskFull means the sandbox's disk had no room left for a write.
	ErrDiskFull = errors.New("disk full")
	// ErrUnavailable means the agent could not be reached: the sandbox is gone.
	ErrUnavailable = errors.New("sandbox agent unavailable")
)

func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Code == CodeNotFound
	case ErrBadRequest:
		return e.Code == CodeBadRequest
	case ErrDiskFull:
		return e.Code == CodeDiskFull
	}
	return false
}

// ErrProtocol means the agent broke the protocol: an answer that is
// malformed, larger than the protocol allows, or that does not come in
// time. The agent runs inside the sandbox, so its answers are untrusted
// input: such an agent may be the sandbox's code posing as one, and the
// sandbox should be destroyed. Errors that match ErrProtocol also match
// ErrUnavailable.
var ErrProtocol = errors.New("sandbox agent broke the protocol")

type protocolError struct{ msg string }

func (e *protocolError) Error() string { return "agent: protocol violation: " + e.msg }

func (e *protocolError) Is(target error) bool {
	return target == ErrProtocol || target == ErrUnavailable
}

func protocolErrorf(format string, args ...any) error {
	return &protocolError{msg: fmt.Sprintf(format, args...)}
}

// Time the host gives an agent (variables for tests).
var (
	// ExecGrace is how long past an execution's timeout the host waits for
	// the agent's result before it gives up on the agent.
	ExecGrace = 10 * time.Second
	// AnswerTimeout bounds every other call that does not stream: the
	// agent must answer (headers and body) within it.
	AnswerTimeout = 60 * time.Second
)

// Bounds on what the host reads from an agent.
const (
	// MaxEventBytes bounds one line of an execution's stream (a result
	// with a large Python value is the longest).
	MaxEventBytes = 16 << 20
	// MaxListEntries and MaxListBytes bound a directory listing.
	MaxListEntries = 100_000
	MaxListBytes   = 32 << 20
	maxSmallBody   = 64 << 10  // errors, file infos, service exits
	maxMessage     = 2 << 10   // an error message passed on to users
	maxLogLineWire = 128 << 10 // a service log line as JSON (lines are cut at 16 KiB, 6 bytes each at most once escaped)
)

// errTooLong is the cause of a deadline the host sets on an agent call.
var errTooLong = errors.New("the agent did not answer in time")

// Client talks to one agent. It is safe for concurrent use and keeps
// connections alive between calls.
type Client struct {
	hc   *http.Client
	dial func(ctx context.Context) (net.Conn, error)
	// auth is the Authorization header of every request ("": none).
	auth string
}

// NewClient returns a client that reaches the agent through dial, which
// decides the transport (a Unix socket locally, something else elsewhere).
func NewClient(dial func(ctx context.Context) (net.Conn, error)) *Client {
	tr := &http.Transport{
		DialContext:            func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		MaxIdleConnsPerHost:    8,
		IdleConnTimeout:        90 * time.Second,
		DisableCompression:     true,
		MaxResponseHeaderBytes: maxSmallBody,
	}
	return &Client{hc: &http.Client{Transport: tr}, dial: dial}
}

// TCPClient returns a client for an agent listening on TCP at addr
// (host:port) that requires token (see Options.Token).
func TCPClient(addr, token string) *Client {
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return NewTokenClient(func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }, token)
}

// NewTokenClient is NewClient for an agent that requires token.
func NewTokenClient(dial func(ctx context.Context) (net.Conn, error), token string) *Client {
	c := NewClient(dial)
	c.auth = tokenHeaderPrefix + token
	return c
}

// UnixClient returns a client for an agent listening on a Unix socket.
func UnixClient(path string) *Client {
	var d net.Dialer
	return NewClient(func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "unix", path) })
}

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Output is the collected result of an execution.
type Output struct {
	Stdout string
	Stderr string
	Result
}

// Exec runs req and returns its output. If onEvent is not nil, it sees each
// chunk of output as it arrives.
//
// The host enforces the execution's bounds itself: at most MaxOutputBytes
// of each stream are kept (and passed to onEvent), lines are bounded, and
// the result must come within the timeout plus ExecGrace; an agent that
// breaks these gets an error that matches ErrProtocol.
func (c *Client) Exec(ctx context.Context, req ExecRequest, onEvent func(Event)) (*Output, error) {
	timeout := time.Duration(req.TimeoutMillis) * time.Millisecond
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	limit := req.MaxOutputBytes
	if limit <= 0 {
		limit = DefaultMaxOutputBytes
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeoutCause(ctx, timeout+ExecGrace, errTooLong)
	defer cancel()
	resp, err := c.do(ctx, http.MethodPost, "/exec", nil, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	// What an honest agent can send: each stream's output, JSON-escaped
	// (at most 6 bytes a byte) and cut into events, and one result.
	// (The cap is bounded so that the product cannot overflow.)
	budget := 2*6*min(limit, 1<<40) + 2*MaxEventBytes
	ev := &eventReader{r: bufio.NewReaderSize(io.LimitReader(resp.Body, budget+1), 64<<10), budget: budget}
	var out Output
	var col collector
	col.limit = limit
	for {
		line, err := ev.next()
		if err != nil {
			if ctx.Err() != nil {
				return nil, c.ctxErr(ctx)
			}
			return nil, err
		}
		var e Event
		if err := json.Unmarshal(line, &e); err != nil {
			return nil, protocolErrorf("malformed execution event: %v", err)
		}
		if e.Result != nil {
			out.Result = *e.Result
			out.Stdout, out.Stderr = col.out[0].String(), col.out[1].String()
			out.StdoutTruncated = out.StdoutTruncated || col.truncated[0]
			out.StderrTruncated = out.StderrTruncated || col.truncated[1]
			return &out, nil
		}
		e.Stdout, e.Stderr = col.add(0, e.Stdout), col.add(1, e.Stderr)
		if onEvent != nil && (e.Stdout != "" || e.Stderr != "") {
			onEvent(e)
		}
	}
}

// collector keeps at most limit bytes of each of two streams.
type collector struct {
	limit     int64
	out       [2]strings.Builder
	truncated [2]bool
}

// add keeps what fits of s in stream i and returns it.
func (c *collector) add(i int, s string) string {
	room := c.limit - int64(c.out[i].Len())
	if int64(len(s)) > room {
		c.truncated[i] = true
		cut := int(max(room, 0))
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	c.out[i].WriteString(s)
	return s
}

// eventReader reads the lines of an execution stream, each at most
// MaxEventBytes, and budget bytes in all.
type eventReader struct {
	r      *bufio.Reader
	budget int64
	read   int64
	line   []byte
}

func (e *eventReader) next() ([]byte, error) {
	e.line = e.line[:0]
	for {
		chunk, err := e.r.ReadSlice('\n')
		e.read += int64(len(chunk))
		if e.read > e.budget {
			return nil, protocolErrorf("the execution stream is longer than its output limit allows")
		}
		if len(e.line)+len(chunk) > MaxEventBytes {
			return nil, protocolErrorf("an execution event is longer than %d bytes", MaxEventBytes)
		}
		e.line = append(e.line, chunk...)
		switch {
		case err == nil:
			return e.line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			return nil, protocolErrorf("the execution stream ended without a result")
		default:
			return nil, fmt.Errorf("%w: reading the execution stream: %v", ErrUnavailable, err)
		}
	}
}

// ctxErr is the error for a call whose context ended: the caller's own
// error, or a protocol violation if it was the deadline the client set.
func (c *Client) ctxErr(ctx context.Context) error {
	if errors.Is(context.Cause(ctx), errTooLong) {
		return protocolErrorf("no answer in time")
	}
	return ctx.Err()
}

// call is do for calls that answer at once: the agent has AnswerTimeout
// (plus extra) to answer, body included; cancel releases it once the body
// has been read.
func (c *Client) call(ctx context.Context, extra time.Duration, method, path string, q url.Values, body io.Reader) (*http.Response, context.Context, context.CancelFunc, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, AnswerTimeout+extra, errTooLong)
	resp, err := c.do(ctx, method, path, q, body)
	if err != nil {
		cancel()
		return nil, nil, nil, err
	}
	return resp, ctx, cancel, nil
}

// decodeSmall decodes a bounded JSON answer.
func (c *Client) decode(ctx context.Context, resp *http.Response, limit int64, v any) error {
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		if ctx.Err() != nil {
			return c.ctxErr(ctx)
		}
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if int64(len(b)) > limit {
		return protocolErrorf("an answer is longer than %d bytes", limit)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return protocolErrorf("malformed answer: %v", err)
	}
	return nil
}

// List lists a directory of the workspace ("" for its top).
func (c *Client) List(ctx context.Context, dir string) ([]FileInfo, error) {
	resp, ctx, cancel, err := c.call(ctx, 0, http.MethodGet, "/files", url.Values{"path": {dir}}, nil)
	if err != nil {
		return nil, err
	}
	defer cancel()
	var list []FileInfo
	if err := c.decode(ctx, resp, MaxListBytes, &list); err != nil {
		return nil, err
	}
	if len(list) > MaxListEntries {
		return nil, protocolErrorf("a listing of %d entries (at most %d)", len(list), MaxListEntries)
	}
	return list, nil
}

// Open returns a reader for a file's content and its size. The caller closes it.
//
// The agent must declare the size, and the reader ends after that many
// bytes (an error if fewer come).
func (c *Client) Open(ctx context.Context, name string) (io.ReadCloser, int64, error) {
	resp, err := c.do(ctx, http.MethodGet, "/files/content", url.Values{"name": {name}}, nil)
	if err != nil {
		return nil, 0, err
	}
	if resp.ContentLength < 0 {
		resp.Body.Close()
		return nil, 0, protocolErrorf("a file's content came without its length")
	}
	return resp.Body, resp.ContentLength, nil
}

// Write stores the content of r as name.
func (c *Client) Write(ctx context.Context, name string, r io.Reader) (FileInfo, error) {
	resp, ctx, cancel, err := c.call(ctx, 10*time.Minute, http.MethodPut, "/files/content", url.Values{"name": {name}}, r)
	if err != nil {
		return FileInfo{}, err
	}
	defer cancel()
	var info FileInfo
	return info, c.decode(ctx, resp, maxSmallBody, &info)
}

// Remove deletes a file (or a directory tree).
func (c *Client) Remove(ctx context.Context, name string) error {
	resp, _, cancel, err := c.call(ctx, 0, http.MethodDelete, "/files/content", url.Values{"name": {name}}, nil)
	if err != nil {
		return err
	}
	defer cancel()
	return drain(resp)
}

// Reset kills every process in the sandbox but the agent; the shell and
// Python interpreters start afresh on next use.
func (c *Client) Reset(ctx context.Context) error {
	resp, _, cancel, err := c.call(ctx, 0, http.MethodPost, "/reset", nil, nil)
	if err != nil {
		return err
	}
	defer cancel()
	return drain(resp)
}

// Ping checks that the agent answers.
func (c *Client) Ping(ctx context.Context) error {
	resp, _, cancel, err := c.call(ctx, 0, http.MethodGet, "/healthz", nil, nil)
	if err != nil {
		return err
	}
	defer cancel()
	return drain(resp)
}

func (c *Client) do(ctx context.Context, method, path string, q url.Values, body io.Reader) (*http.Response, error) {
	u := "http://agent" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, c.ctxErr(ctx)
		}
		return nil, dialError(err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, errorFrom(resp)
	}
	return resp, nil
}

// dialError is the error for a failed call. A refused connection means
// that nothing listens on the agent's socket any more: the agent never
// closes it while it lives, so the agent is gone although the sandbox may
// not be (its code may keep it alive); nothing can be trusted to answer
// there again.
func dialError(err error) error {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return protocolErrorf("the agent no longer listens: %v", err)
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// errorFrom reads an agent's error answer, bounded, and keeps its message
// short and printable: it may reach users.
func errorFrom(resp *http.Response) error {
	var eb ErrorBody
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxSmallBody)).Decode(&eb); err != nil {
		eb = ErrorBody{Code: CodeInternal, Message: resp.Status}
	}
	msg := strings.ToValidUTF8(eb.Message, "?")
	if len(msg) > maxMessage {
		cut := maxMessage
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "…"
	}
	return &Error{Status: resp.StatusCode, Code: eb.Code, Message: msg}
}

// StartService starts a long-running process in the sandbox.
func (c *Client) StartService(ctx context.Context, spec ServiceSpec) error {
	b, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	resp, _, cancel, err := c.call(ctx, 0, http.MethodPost, "/services", nil, bytes.NewReader(b))
	if err != nil {
		return err
	}
	defer cancel()
	return drain(resp)
}

// drain reads and closes an answer whose body does not matter, which must
// be small.
func drain(resp *http.Response) error {
	defer resp.Body.Close()
	n, _ := io.Copy(io.Discard, io.LimitReader(resp.Body, maxSmallBody+1))
	if n > maxSmallBody {
		return protocolErrorf("an answer is longer than %d bytes", maxSmallBody)
	}
	return nil
}

// WaitService waits until a service exits.
func (c *Client) WaitService(ctx context.Context, id string) (ServiceExit, error) {
	resp, err := c.do(ctx, http.MethodGet, "/services/"+url.PathEscape(id)+"/wait", nil, nil)
	if err != nil {
		return ServiceExit{}, err
	}
	defer resp.Body.Close()
	var e ServiceExit
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxSmallBody+1))
	if err == nil && len(b) > maxSmallBody {
		return e, protocolErrorf("a service's exit is longer than %d bytes", maxSmallBody)
	}
	if err == nil {
		err = json.Unmarshal(b, &e)
	}
	if err != nil {
		if ctx.Err() != nil {
			return e, ctx.Err()
		}
		return e, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return e, nil
}

// ServiceLogs passes a service's recent log lines to fn and, with follow,
// new ones until the service exits or ctx ends.
func (c *Client) ServiceLogs(ctx context.Context, id string, follow bool, fn func(LogLine)) error {
	q := url.Values{}
	if follow {
		q.Set("follow", "true")
	}
	resp, err := c.do(ctx, http.MethodGet, "/services/"+url.PathEscape(id)+"/logs", q, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	br := bufio.NewReaderSize(resp.Body, 4<<10)
	for {
		line, err := readLine(br, maxLogLineWire)
		if err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return err
		}
		var l LogLine
		if err := json.Unmarshal(line, &l); err != nil {
			return protocolErrorf("malformed log line: %v", err)
		}
		fn(l)
	}
}

// readLine reads a line of at most limit bytes.
func readLine(br *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > limit {
			return nil, protocolErrorf("a line is longer than %d bytes", limit)
		}
		line = append(line, chunk...)
		if !errors.Is(err, bufio.ErrBufferFull) {
			return line, err
		}
	}
}

// StopService stops a service (SIGTERM, then SIGKILL after grace).
func (c *Client) StopService(ctx context.Context, id string, grace time.Duration) error {
	resp, _, cancel, err := c.call(ctx, grace, http.MethodDelete, "/services/"+url.PathEscape(id), url.Values{"grace": {grace.String()}}, nil)
	if err != nil {
		return err
	}
	defer cancel()
	return drain(resp)
}

// DialPort opens a TCP connection to a port inside the sandbox, through
// the agent (the sandbox needs no network interface for it).
//
// Over a Unix socket the agent passes, where it can, the connected socket
// itself to the host, which then talks to the port directly; otherwise
// (gVisor, or an agent reached over TCP) the agent relays the bytes on
// the upgraded connection.
func (c *Client) DialPort(ctx context.Context, port int) (net.Conn, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, dialError(err)
	}
	path := "/dial?port=" + strconv.Itoa(port)
	uc, unix := conn.(*net.UnixConn)
	if unix {
		path += "&pass=fd"
	}
	conn, err = c.upgrade(ctx, conn, path)
	if err != nil || !unix {
		return conn, err
	}
	return receiveConn(uc)
}

// receiveConn runs the host's side of the fd-passing handshake on uc,
// upgraded for /dial?pass=fd: the TCP socket the agent passed, or uc
// itself if the agent relays.
func receiveConn(uc *net.UnixConn) (net.Conn, error) {
	_ = uc.SetDeadline(time.Now().Add(AnswerTimeout))
	defer uc.SetDeadline(time.Time{})
	if _, err := uc.Write([]byte{dialReady}); err != nil {
		uc.Close()
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	b := make([]byte, 1)
	oob := make([]byte, syscall.CmsgSpace(4))
	n, oobn, _, _, err := uc.ReadMsgUnix(b, oob)
	if err != nil || n != 1 {
		uc.Close()
		return nil, fmt.Errorf("%w: dial handshake: %v", ErrUnavailable, err)
	}
	if b[0] == dialSplice {
		return uc, nil
	}
	defer uc.Close()
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("%w: no socket passed (%v)", ErrUnavailable, err)
	}
	fds, err := syscall.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, fmt.Errorf("%w: no socket passed (%v)", ErrUnavailable, err)
	}
	f := os.NewFile(uintptr(fds[0]), "sandbox-tcp")
	defer f.Close()
	tc, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return tc, nil
}

// Attach connects to a stdio service's stdin and stdout.
func (c *Client) Attach(ctx context.Context, id string) (net.Conn, error) {
	return c.stream(ctx, "/services/"+url.PathEscape(id)+"/attach")
}

// stream opens a raw byte stream through the agent with an HTTP upgrade.
func (c *Client) stream(ctx context.Context, path string) (net.Conn, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, dialError(err)
	}
	return c.upgrade(ctx, conn, path)
}

// upgrade asks for path on conn, a new connection to the agent, with an
// HTTP upgrade, and returns the raw stream (closing conn on failure).
func (c *Client) upgrade(ctx context.Context, conn net.Conn, path string) (net.Conn, error) {
	// The agent answers an upgrade at once: bound the wait, and the size
	// of what it sends before the stream.
	dl := time.Now().Add(AnswerTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	_ = conn.SetDeadline(dl)
	req := "GET " + path + " HTTP/1.1\r\nHost: agent\r\nConnection: Upgrade\r\nUpgrade: " + upgradeProto + "\r\n"
	if c.auth != "" {
		req += "Authorization: " + c.auth + "\r\n"
	}
	req += "\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	br := bufio.NewReader(io.LimitReader(conn, maxSmallBody))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		return nil, errorFrom(resp)
	}
	_ = conn.SetDeadline(time.Time{})
	if br.Buffered() > 0 {
		b, _ := br.Peek(br.Buffered())
		return &prefixConn{Conn: conn, r: io.MultiReader(bytes.NewReader(bytes.Clone(b)), conn)}, nil
	}
	return conn, nil
}

// Tunnel opens the sandbox's app-to-app tunnel: a connection on which the
// agent is an HTTP/2 client and the caller serves it (see TunnelAddr). A
// non-empty identityHeader gives what the agent starts from then on
// IDENTITY_ENDPOINT and IDENTITY_HEADER (that value).
func (c *Client) Tunnel(ctx context.Context, identityHeader string) (net.Conn, error) {
	p := "/tunnel"
	if identityHeader != "" {
		p += "?identity=" + url.QueryEscape(identityHeader)
	}
	return c.stream(ctx, p)
}
