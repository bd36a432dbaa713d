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

// Client talks to one agent. It is safe for concurrent use and keeps
// connections alive between calls.
type Client struct {
	hc   *http.Client
	dial func(ctx context.Context) (net.Conn, error)
}

// NewClient returns a client that reaches the agent through dial, which
// decides the transport (a Unix socket locally, something else elsewhere).
func NewClient(dial func(ctx context.Context) (net.Conn, error)) *Client {
	tr := &http.Transport{
		DialContext:         func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &Client{hc: &http.Client{Transport: tr}, dial: dial}
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
func (c *Client) Exec(ctx context.Context, req ExecRequest, onEvent func(Event)) (*Output, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(ctx, http.MethodPost, "/exec", nil, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out Output
	var stdout, stderr strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("agent: malformed event: %w", err)
		}
		if e.Result != nil {
			out.Result = *e.Result
			out.Stdout, out.Stderr = stdout.String(), stderr.String()
			return &out, nil
		}
		stdout.WriteString(e.Stdout)
		stderr.WriteString(e.Stderr)
		if onEvent != nil {
			onEvent(e)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("%w: the execution stream ended without a result (%v)", ErrUnavailable, sc.Err())
}

// List lists a directory of the workspace ("" for its top).
func (c *Client) List(ctx context.Context, dir string) ([]FileInfo, error) {
	resp, err := c.do(ctx, http.MethodGet, "/files", url.Values{"path": {dir}}, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var list []FileInfo
	return list, json.NewDecoder(resp.Body).Decode(&list)
}

// Open returns a reader for a file's content and its size. The caller closes it.
func (c *Client) Open(ctx context.Context, name string) (io.ReadCloser, int64, error) {
	resp, err := c.do(ctx, http.MethodGet, "/files/content", url.Values{"name": {name}}, nil)
	if err != nil {
		return nil, 0, err
	}
	return resp.Body, resp.ContentLength, nil
}

// Write stores the content of r as name.
func (c *Client) Write(ctx context.Context, name string, r io.Reader) (FileInfo, error) {
	resp, err := c.do(ctx, http.MethodPut, "/files/content", url.Values{"name": {name}}, r)
	if err != nil {
		return FileInfo{}, err
	}
	defer resp.Body.Close()
	var info FileInfo
	return info, json.NewDecoder(resp.Body).Decode(&info)
}

// Remove deletes a file (or a directory tree).
func (c *Client) Remove(ctx context.Context, name string) error {
	resp, err := c.do(ctx, http.MethodDelete, "/files/content", url.Values{"name": {name}}, nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Reset kills every process in the sandbox but the agent; the shell and
// Python interpreters start afresh on next use.
func (c *Client) Reset(ctx context.Context) error {
	resp, err := c.do(ctx, http.MethodPost, "/reset", nil, nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Ping checks that the agent answers.
func (c *Client) Ping(ctx context.Context) error {
	resp, err := c.do(ctx, http.MethodGet, "/healthz", nil, nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
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
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		var eb ErrorBody
		if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&eb); err != nil {
			eb = ErrorBody{Code: CodeInternal, Message: resp.Status}
		}
		return nil, &Error{Status: resp.StatusCode, Code: eb.Code, Message: eb.Message}
	}
	return resp, nil
}

// StartService starts a long-running process in the sandbox.
func (c *Client) StartService(ctx context.Context, spec ServiceSpec) error {
	b, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodPost, "/services", nil, bytes.NewReader(b))
	if err != nil {
		return err
	}
	resp.Body.Close()
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
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
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
	dec := json.NewDecoder(resp.Body)
	for {
		var l LogLine
		if err := dec.Decode(&l); err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return err
		}
		fn(l)
	}
}

// StopService stops a service (SIGTERM, then SIGKILL after grace).
func (c *Client) StopService(ctx context.Context, id string, grace time.Duration) error {
	resp, err := c.do(ctx, http.MethodDelete, "/services/"+url.PathEscape(id), url.Values{"grace": {grace.String()}}, nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// DialPort opens a TCP connection to a port inside the sandbox, through
// the agent (the sandbox needs no network interface for it).
//
// Where it can, the agent passes the connected socket itself to the host,
// which then talks to the port directly; otherwise the agent relays the
// bytes.
func (c *Client) DialPort(ctx context.Context, port int) (net.Conn, error) {
	conn, err := c.stream(ctx, "/dial?pass=fd&port="+strconv.Itoa(port))
	if err != nil {
		return nil, err
	}
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		conn.Close()
		return nil, fmt.Errorf("%w: unexpected connection type %T", ErrUnavailable, conn)
	}
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
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	req := "GET " + path + " HTTP/1.1\r\nHost: agent\r\nConnection: Upgrade\r\nUpgrade: " + upgradeProto + "\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		var eb ErrorBody
		if json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&eb) != nil {
			eb = ErrorBody{Code: CodeInternal, Message: resp.Status}
		}
		return nil, &Error{Status: resp.StatusCode, Code: eb.Code, Message: eb.Message}
	}
	_ = conn.SetDeadline(time.Time{})
	if br.Buffered() > 0 {
		b, _ := br.Peek(br.Buffered())
		return &prefixConn{Conn: conn, r: io.MultiReader(bytes.NewReader(bytes.Clone(b)), conn)}, nil
	}
	return conn, nil
}
