package local

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// Endpoint is how the host reaches a sandbox's agent: the agent's Unix
// socket, opened once (O_PATH, never following a symlink) right after the
// agent said it was ready, before any code of the sandbox's ran. Connections
// go through that open file (/proc/self/fd/N), never through the socket's
// name again: the directory that holds the name is writable by the sandbox,
// which may unlink it or replace it with a symlink to another sandbox's
// socket, and none of that changes where the host connects.
type Endpoint struct {
	mu sync.Mutex
	fd int // -1 once closed
}

// ErrEndpointClosed is returned by Dial after Close.
var ErrEndpointClosed = errors.New("the sandbox's agent endpoint is closed")

// OpenEndpoint opens dir/name, the agent's socket. dir must not be
// replaceable by the sandbox (its parent is not writable by it); name is a
// single path component. The socket must be owned by one of owners.
func OpenEndpoint(dir, name string, owners ...uint32) (*Endpoint, error) {
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(dfd)
	// A single component with O_NOFOLLOW: a symlink is refused (ELOOP),
	// nothing outside dir is ever looked up.
	fd, err := unix.Openat(dfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open the agent's socket: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("stat the agent's socket: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		unix.Close(fd)
		return nil, fmt.Errorf("the agent's socket is not a socket (mode %o)", st.Mode)
	}
	owned := len(owners) == 0
	for _, o := range owners {
		owned = owned || st.Uid == o
	}
	if !owned {
		unix.Close(fd)
		return nil, fmt.Errorf("the agent's socket is owned by uid %d, not the sandbox", st.Uid)
	}
	return &Endpoint{fd: fd}, nil
}

// Dial connects to the agent. The held file is duplicated for the
// connection, so that Close never races with a dial into reusing its
// number for another file.
func (e *Endpoint) Dial(ctx context.Context) (net.Conn, error) {
	e.mu.Lock()
	if e.fd < 0 {
		e.mu.Unlock()
		return nil, ErrEndpointClosed
	}
	fd, err := unix.FcntlInt(uintptr(e.fd), unix.F_DUPFD_CLOEXEC, 0)
	e.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("dup the agent's socket: %w", err)
	}
	defer unix.Close(fd)
	var d net.Dialer
	return d.DialContext(ctx, "unix", "/proc/self/fd/"+strconv.Itoa(fd))
}

// Close releases the held socket; Dial fails from then on.
func (e *Endpoint) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.fd >= 0 {
		unix.Close(e.fd)
		e.fd = -1
	}
}
