package local

import (
	"context"
	"errors"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
)

// Addr is the address of an agent's socket (dir/name, owned by one of
// owners) that another Berth process on the host dials with DialAddr:
// "unix:DIR/NAME?uid=A&uid=B".
func Addr(dir, name string, owners ...uint32) string {
	q := url.Values{}
	for _, o := range owners {
		q.Add("uid", strconv.FormatUint(uint64(o), 10))
	}
	return "unix:" + filepath.Join(dir, name) + "?" + q.Encode()
}

// ErrBadAddr means an address is not one Addr made.
var ErrBadAddr = errors.New("not a local agent address")

// DialAddr connects to the agent at an address Addr made, with the checks
// OpenEndpoint makes (no symlink, a socket, owned by the sandbox).
func DialAddr(ctx context.Context, addr string) (net.Conn, error) {
	rest, ok := strings.CutPrefix(addr, "unix:")
	path, query, _ := strings.Cut(rest, "?")
	q, err := url.ParseQuery(query)
	if !ok || err != nil || !filepath.IsAbs(path) || len(q["uid"]) == 0 {
		return nil, ErrBadAddr
	}
	var owners []uint32
	for _, s := range q["uid"] {
		u, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return nil, ErrBadAddr
		}
		owners = append(owners, uint32(u))
	}
	ep, err := OpenEndpoint(filepath.Dir(path), filepath.Base(path), owners...)
	if err != nil {
		return nil, err
	}
	defer ep.Close()
	return ep.Dial(ctx)
}
