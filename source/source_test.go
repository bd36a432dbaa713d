package source

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/archive"
)

func packed(t *testing.T, files map[string]string) []byte {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := archive.Pack(context.Background(), &buf, dir, archive.PackOptions{}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// TestPut: an upload is stored under its digest once; a wrong digest, an
// upload over the limit and a non-archive are refused and leave nothing.
func TestPut(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := New(Options{Dir: dir, MaxBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	a := packed(t, map[string]string{"a.txt": "a"})
	info, added, err := s.Put(ctx, bytes.NewReader(a), digestOf(a))
	if err != nil || !added || info.Digest != digestOf(a) || info.Size != int64(len(a)) {
		t.Fatalf("first put: %+v %v %v", info, added, err)
	}
	if _, added, err := s.Put(ctx, bytes.NewReader(a), ""); err != nil || added {
		t.Fatalf("second put: added %v, %v", added, err)
	}
	if got, err := s.Stat(info.Digest); err != nil || got != info {
		t.Fatalf("stat: %+v %v", got, err)
	}
	if _, _, err := s.Put(ctx, bytes.NewReader(a), digestOf([]byte("other"))); !errors.Is(err, ErrDigest) {
		t.Errorf("wrong digest: %v", err)
	}
	// An endless body: refused once past the limit, never read whole.
	if _, _, err := s.Put(ctx, io.LimitReader(zeros{}, 1<<40), ""); !errors.Is(err, ErrTooLarge) {
		t.Errorf("too large: %v", err)
	}
	var ae *archive.Error
	if _, _, err := s.Put(ctx, strings.NewReader("not an archive"), ""); !errors.As(err, &ae) {
		t.Errorf("garbage: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("store holds %d files, want 1 (no leftovers)", len(entries))
	}
	if _, err := s.Stat("sha256:" + strings.Repeat("0", 64)); !errors.Is(err, ErrNotFound) {
		t.Errorf("stat of a missing digest: %v", err)
	}
	if _, err := s.Stat("../../etc/passwd"); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("stat of a bad digest: %v", err)
	}
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) { clear(b); return len(b), nil }

// TestGC: archives no revision uses go once their grace period is over;
// used ones and fresh ones stay.
func TestGC(t *testing.T) {
	ctx := context.Background()
	s, err := New(Options{Dir: t.TempDir(), Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var digests []string
	for _, body := range []string{"used", "old", "fresh"} {
		info, _, err := s.Put(ctx, bytes.NewReader(packed(t, map[string]string{"f": body})), "")
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, info.Digest)
	}
	past := time.Now().Add(-2 * time.Hour)
	for _, d := range digests[:2] {
		if err := os.Chtimes(s.path(d), past, past); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := s.GC(func(d string) bool { return d == digests[0] })
	if err != nil || len(removed) != 1 || removed[0] != digests[1] {
		t.Fatalf("GC removed %v (%v), want only %s", removed, err, digests[1])
	}
	for i, d := range digests {
		_, err := s.Stat(d)
		if (i == 1) != errors.Is(err, ErrNotFound) {
			t.Errorf("%d: stat %v", i, err)
		}
	}
}
