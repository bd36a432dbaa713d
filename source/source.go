// Package source keeps the archives that clients upload as the files of
// app revisions (the CLI's --dir), content-addressed by their sha256
// digest: an upload is streamed to disk (never held in memory), bounded in
// size, checked against the digest the client names and against the
// unpacking rules of internal/archive, and renamed into place only when
// whole. Archives that no revision references are removed after a grace
// period.
package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/archive"
)

// DefaultMaxBytes is the default limit of an upload (compressed).
const DefaultMaxBytes = 1 << 30

// DefaultGrace is how long an unreferenced archive is kept after its
// upload (or its last use), so that the deploy that follows finds it.
const DefaultGrace = time.Hour

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// ValidDigest checks a digest's form ("sha256:" and 64 hex digits).
func ValidDigest(d string) error {
	if !digestRE.MatchString(d) {
		return fmt.Errorf("%q is not a source digest (sha256:<64 hex digits>)", d)
	}
	return nil
}

// Errors.
var (
	ErrNotFound = errors.New("source not found")
	// ErrTooLarge: the upload is over the store's limit.
	ErrTooLarge = errors.New("source archive too large")
	// ErrDigest: the upload's bytes do not have the digest the client named.
	ErrDigest = errors.New("source archive digest mismatch")
)

// Options configure a Store.
type Options struct {
	// Dir holds the archives (created, private to the server).
	Dir string
	// MaxBytes bounds an upload (default DefaultMaxBytes).
	MaxBytes int64
	// Limits bound what an archive may unpack to.
	Limits archive.Limits
	// Grace is how long unreferenced archives are kept (default DefaultGrace).
	Grace time.Duration
}

// Info describes a stored archive.
type Info struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// Store keeps uploaded archives.
type Store struct {
	o  Options
	mu sync.Mutex // orders collections against renewals and Put's rename
}

// New opens (creating) a store and removes uploads that were cut short.
func New(o Options) (*Store, error) {
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.Grace <= 0 {
		o.Grace = DefaultGrace
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	tmps, _ := filepath.Glob(filepath.Join(o.Dir, ".upload-*"))
	for _, p := range tmps {
		_ = os.Remove(p)
	}
	return &Store{o: o}, nil
}

// MaxBytes is the store's upload limit.
func (s *Store) MaxBytes() int64 { return s.o.MaxBytes }

func (s *Store) path(digest string) string {
	return filepath.Join(s.o.Dir, strings.TrimPrefix(digest, "sha256:")+".tar.gz")
}

// Stat reports a stored archive (ErrNotFound if there is none) and
// renews its grace period.
func (s *Store) Stat(digest string) (Info, error) {
	if err := ValidDigest(digest); err != nil {
		return Info{}, err
	}
	p := s.path(digest)
	// Under mu: a collection cannot remove it between the check and the
	// renewal.
	s.mu.Lock()
	defer s.mu.Unlock()
	info, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return Info{}, fmt.Errorf("%w: %s", ErrNotFound, digest)
	}
	if err != nil {
		return Info{}, err
	}
	now := time.Now()
	_ = os.Chtimes(p, now, now)
	return Info{Digest: digest, Size: info.Size()}, nil
}

// Open opens a stored archive.
func (s *Store) Open(digest string) (*os.File, error) {
	if err := ValidDigest(digest); err != nil {
		return nil, err
	}
	f, err := os.Open(s.path(digest))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, digest)
	}
	return f, err
}

// Put stores the archive read from r. If want is not empty the bytes must
// have that digest. It reports whether the archive was new.
func (s *Store) Put(ctx context.Context, r io.Reader, want string) (Info, bool, error) {
	if want != "" {
		if err := ValidDigest(want); err != nil {
			return Info{}, false, err
		}
	}
	tmp, err := os.CreateTemp(s.o.Dir, ".upload-*")
	if err != nil {
		return Info{}, false, err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	defer tmp.Close()
	h := sha256.New()
	// One byte past the limit tells a body of exactly MaxBytes from a
	// larger one.
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, s.o.MaxBytes+1))
	if err != nil {
		return Info{}, false, err
	}
	if n > s.o.MaxBytes {
		return Info{}, false, fmt.Errorf("%w: more than %d bytes (the server's --max-upload)", ErrTooLarge, s.o.MaxBytes)
	}
	info := Info{Digest: "sha256:" + hex.EncodeToString(h.Sum(nil)), Size: n}
	if want != "" && want != info.Digest {
		return Info{}, false, fmt.Errorf("%w: the client named %s, the bytes are %s", ErrDigest, want, info.Digest)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return Info{}, false, err
	}
	if _, err := archive.Check(ctx, tmp, s.o.Limits); err != nil {
		return Info{}, false, err
	}
	if err := tmp.Sync(); err != nil {
		return Info{}, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := os.Stat(s.path(info.Digest)); err == nil {
		now := time.Now()
		_ = os.Chtimes(s.path(info.Digest), now, now)
		return info, false, nil
	}
	if err := os.Rename(tmp.Name(), s.path(info.Digest)); err != nil {
		return Info{}, false, err
	}
	return info, true, nil
}

// GC removes the archives that used does not report as used and that are
// older than the grace period. It returns the digests removed.
func (s *Store) GC(used func(digest string) bool) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	entries, err := os.ReadDir(s.o.Dir)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range entries {
		hexd, ok := strings.CutSuffix(e.Name(), ".tar.gz")
		digest := "sha256:" + hexd
		if !ok || ValidDigest(digest) != nil || used(digest) {
			continue
		}
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < s.o.Grace {
			continue
		}
		if err := os.Remove(filepath.Join(s.o.Dir, e.Name())); err == nil {
			removed = append(removed, digest)
		}
	}
	return removed, nil
}
