// Package sessionseal seals the upstream of an MCP session (the app
// replica that holds it, how to reach it, and the replica's own session id)
// into the Mcp-Session-Id the gateway hands to the client, so that any
// Berth replica that shares the key routes the session's later requests to
// the same upstream without shared memory. The id is sealed with
// XChaCha20-Poly1305 under a key every Berth replica derives from the
// master key: a client can neither read it nor forge one, and an id sealed
// for one app is refused by another (the app name is bound to it).
package sessionseal

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"

	"golang.org/x/crypto/chacha20poly1305"
)

// Upstream is what a sealed session id carries.
type Upstream struct {
	// Revision and Replica name the app replica (incarnation) that holds
	// the session.
	Revision string
	Replica  string
	// Addr is how another Berth process reaches the replica's agent (for
	// the local drivers "unix:/path/to/agent.sock"; empty if only the
	// process that runs the replica can reach it), Port the app's port
	// behind it.
	Addr string
	Port int
	// Session is the replica's own Mcp-Session-Id.
	Session string
}

// prefix marks (and versions) sealed ids.
const prefix = "b1."

// maxLen bounds the ids Open considers: no upstream makes them longer, and
// a client's made-up megabyte costs nothing.
const maxLen = 4096

// ErrInvalid means an id is not one this key sealed for this app (made
// up, altered, sealed for another app or under another key).
var ErrInvalid = errors.New("sessionseal: invalid session id")

// Sealer seals and opens session ids; it is safe for concurrent use.
type Sealer struct {
	aead interface {
		Seal(dst, nonce, plaintext, ad []byte) []byte
		Open(dst, nonce, ciphertext, ad []byte) ([]byte, error)
		NonceSize() int
		Overhead() int
	}
}

// New returns a Sealer for a 32-byte key.
func New(key []byte) (*Sealer, error) {
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

// Seal returns the session id for up, bound to app.
func (s *Sealer) Seal(app string, up Upstream) string {
	var p []byte
	for _, f := range []string{up.Revision, up.Replica, up.Addr, up.Session} {
		p = binary.AppendUvarint(p, uint64(len(f)))
		p = append(p, f...)
	}
	p = binary.AppendUvarint(p, uint64(up.Port))
	n := s.aead.NonceSize()
	buf := make([]byte, n, n+len(p)+s.aead.Overhead())
	_, _ = rand.Read(buf)
	buf = s.aead.Seal(buf, buf[:n], p, []byte(app))
	return prefix + base64.RawURLEncoding.EncodeToString(buf)
}

// Open returns the upstream sealed in id for app, or ErrInvalid.
func (s *Sealer) Open(app, id string) (Upstream, error) {
	if len(id) > maxLen || !strings.HasPrefix(id, prefix) {
		return Upstream{}, ErrInvalid
	}
	raw, err := base64.RawURLEncoding.DecodeString(id[len(prefix):])
	n := s.aead.NonceSize()
	if err != nil || len(raw) < n+s.aead.Overhead() {
		return Upstream{}, ErrInvalid
	}
	p, err := s.aead.Open(raw[n:n], raw[:n], raw[n:], []byte(app))
	if err != nil {
		return Upstream{}, ErrInvalid
	}
	var up Upstream
	for _, f := range []*string{&up.Revision, &up.Replica, &up.Addr, &up.Session} {
		l, k := binary.Uvarint(p)
		if k <= 0 || l > uint64(len(p)-k) {
			return Upstream{}, ErrInvalid
		}
		*f, p = string(p[k:k+int(l)]), p[k+int(l):]
	}
	port, k := binary.Uvarint(p)
	if k <= 0 || k != len(p) || port > 65535 {
		return Upstream{}, ErrInvalid
	}
	up.Port = int(port)
	return up, nil
}

// NewRandom returns a Sealer with a random key: ids it seals open only in
// this process.
func NewRandom() *Sealer {
	key := make([]byte, chacha20poly1305.KeySize)
	_, _ = rand.Read(key)
	s, _ := New(key)
	return s
}
