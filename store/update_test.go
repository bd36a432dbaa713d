package store

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
)

// TestUpdate: UpdatePool and UpdateApp hand fn what is stored, keep what
// it returns, and keep nothing when it fails; UpdateApp creates an app;
// concurrent updates all survive.
func TestUpdate(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.UpdatePool(ctx, "p", func(cur []byte) ([]byte, error) { return cur, nil }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update of a missing pool: %v", err)
	}
	if err := s.CreatePool(ctx, "p", []byte(`{"n":0}`), "key-0123456789"); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := s.UpdatePool(ctx, "p", func([]byte) ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("failing fn: %v", err)
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := s.UpdatePool(ctx, "p", func(cur []byte) ([]byte, error) { return append(cur, '+'), nil }); err != nil {
				t.Error(err)
			}
		}()
		go func() {
			defer wg.Done()
			if _, err := s.UpdateApp(ctx, "a", func(cur []byte) ([]byte, error) { return append(cur, '+'), nil }); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	p, err := s.GetPool(ctx, "p")
	if err != nil || string(p.Config) != `{"n":0}`+strings.Repeat("+", 20) {
		t.Fatalf("pool config %q, %v", p.Config, err)
	}
	apps, err := s.ListApps(ctx)
	if err != nil || len(apps) != 1 || string(apps[0].Doc) != strings.Repeat("+", 20) {
		t.Fatalf("apps %v, %v", apps, err)
	}
	if _, err := s.UpdateApp(ctx, "a", func([]byte) ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("failing fn: %v", err)
	}
	if apps, _ := s.ListApps(ctx); string(apps[0].Doc) != strings.Repeat("+", 20) {
		t.Fatalf("a failed update changed the app: %q", apps[0].Doc)
	}
}
