package sessionseal

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func sealer(t testing.TB, b byte) *Sealer {
	s, err := New(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSealOpen(t *testing.T) {
	a, a2, other := sealer(t, 1), sealer(t, 1), sealer(t, 2)
	up := Upstream{Revision: "echo-00002", Replica: "echo-00002-7", Addr: "unix:/var/lib/berth/x/run/agent.sock", Port: 8080, Session: "UPSTREAM-SID-42"}
	id := a.Seal("echo", up)
	if strings.Contains(id, "UPSTREAM") || strings.Contains(id, "agent.sock") {
		t.Fatalf("the sealed id shows its contents: %s", id)
	}
	if id == a.Seal("echo", up) {
		t.Fatal("two seals of one upstream are equal (no fresh nonce)")
	}
	// Another process with the same key opens it.
	if got, err := a2.Open("echo", id); err != nil || got != up {
		t.Fatalf("Open = %+v, %v; want %+v", got, err, up)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(id[len(prefix):])
	flipped := append([]byte(nil), raw...)
	flipped[len(flipped)/2] ^= 1
	for name, tc := range map[string]struct {
		s       *Sealer
		app, id string
	}{
		"another key":          {other, "echo", id},
		"another app":          {a, "echo2", id},
		"altered":              {a, "echo", prefix + base64.RawURLEncoding.EncodeToString(flipped)},
		"truncated":            {a, "echo", id[:len(id)-3]},
		"an upstream's raw id": {a, "echo", "UPSTREAM-SID-42"},
		"empty":                {a, "echo", ""},
		"prefix only":          {a, "echo", prefix},
		"not base64":           {a, "echo", prefix + "!!!!"},
		"huge":                 {a, "echo", prefix + strings.Repeat("A", 1<<20)},
	} {
		if got, err := tc.s.Open(tc.app, tc.id); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Open = %+v, %v; want ErrInvalid", name, got, err)
		}
	}
}

func BenchmarkSealOpen(b *testing.B) {
	s := sealer(b, 1)
	up := Upstream{Revision: "echo-00002", Replica: "echo-00002-7", Addr: "unix:/var/lib/berth/x/apps/echo/run/agent.sock", Port: 8080, Session: "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"}
	id := s.Seal("echo", up)
	b.ReportMetric(float64(len(id)), "bytes/id")
	for b.Loop() {
		if _, err := s.Open("echo", id); err != nil {
			b.Fatal(err)
		}
	}
}
