package logbatch

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

// countingWriter records each write it gets.
type countingWriter struct {
	mu     sync.Mutex
	writes []string
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes = append(c.writes, string(p))
	return len(p), nil
}

func (c *countingWriter) snapshot() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.writes...)
}

func TestLinesArriveTogetherWithinTheInterval(t *testing.T) {
	var dst countingWriter
	w := New(&dst, Options{Interval: 50 * time.Millisecond})
	defer w.Close()
	for i := 0; i < 100; i++ {
		if _, err := w.Write([]byte("line\n")); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Join(dst.snapshot(), "") != strings.Repeat("line\n", 100) {
		if time.Now().After(deadline) {
			t.Fatalf("lines never arrived: %q", dst.snapshot())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := len(dst.snapshot()); n >= 100 {
		t.Fatalf("100 lines took %d writes: nothing was batched", n)
	}
}

func TestSizeAndClose(t *testing.T) {
	for _, tc := range []struct {
		name   string
		size   int
		writes []string
		want   []string // the underlying writes, after Close
	}{
		{"batched until close", 64, []string{"a\n", "b\n"}, []string{"a\nb\n"}},
		{"a full batch goes out first", 4, []string{"a\n", "b\n", "c\n"}, []string{"a\nb\n", "c\n"}},
		{"an oversized write goes out alone, in order", 4, []string{"a\n", "0123456789\n", "c\n"}, []string{"a\n", "0123456789\n", "c\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var dst countingWriter
			w := New(&dst, Options{Interval: time.Hour, Size: tc.size})
			for _, s := range tc.writes {
				if n, err := w.Write([]byte(s)); err != nil || n != len(s) {
					t.Fatalf("Write(%q) = %d, %v", s, n, err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if got := dst.snapshot(); strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("writes %q, want %q", got, tc.want)
			}
			if _, err := w.Write([]byte("late\n")); err == nil {
				t.Fatal("a write after Close succeeded")
			}
			if err := w.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
		})
	}
}

func TestConcurrentWritersKeepLinesWhole(t *testing.T) {
	var dst bytes.Buffer
	w := New(&dst, Options{Interval: time.Millisecond, Size: 256})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				_, _ = w.Write([]byte("0123456789abcdef\n"))
			}
		}()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(dst.String(), "\n"), "\n")
	if len(lines) != 8*500 {
		t.Fatalf("%d lines, want %d", len(lines), 8*500)
	}
	for _, l := range lines {
		if l != "0123456789abcdef" {
			t.Fatalf("torn line %q", l)
		}
	}
}
