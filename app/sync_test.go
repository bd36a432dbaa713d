package app

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/store"
)

// TestSync: an app stored by someone else (another replica, kubectl
// apply) is added, changed and forgotten by Sync and Forget; a document
// whose traffic names a revision it lacks is refused; the manager's own
// writes come back as nothing new.
func TestSync(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (the secrets tmpfs)")
	}
	ctx := context.Background()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m, err := NewManager(ctx, Options{Store: st, StateDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	stored := func(d Doc) store.App {
		b, _ := json.Marshal(d)
		return store.App{Name: d.Name, Doc: b, CreatedAt: time.Now()}
	}
	d := Doc{Name: "elsewhere", Revisions: []Revision{{Name: "elsewhere--r1", Config: Config{Command: "x"}}}, Next: 1}
	if err := m.Sync(ctx, stored(d)); err != nil {
		t.Fatal(err)
	}
	a, err := m.Get("elsewhere")
	if err != nil || len(a.Doc().Revisions) != 1 {
		t.Fatalf("after Sync: %v %v", a, err)
	}
	// What kubectl apply left out takes its default (a concurrency of 0
	// divided the autoscaler by zero: every replica crashed on the App).
	if c := a.Doc().Revisions[0].Config; c.Concurrency != 10 || c.Max != 10 || c.Port != 8080 {
		t.Errorf("defaults not filled: concurrency %d, max %d, port %d", c.Concurrency, c.Max, c.Port)
	}
	invalidRev := Doc{Name: "badrev", Revisions: []Revision{{Name: "badrev--r1", Config: Config{Command: "x", Port: 70000}}}, Next: 1}
	if err := m.Sync(ctx, stored(invalidRev)); err == nil || !strings.Contains(err.Error(), "port") {
		t.Errorf("a revision with port 70000: %v", err)
	}
	d.Revisions = append(d.Revisions, Revision{Name: "elsewhere--r2", Config: Config{Command: "y"}})
	d.Hostnames = []Hostname{{Host: "tools.example.com"}}
	if err := m.Sync(ctx, stored(d)); err != nil {
		t.Fatal(err)
	}
	if n := len(a.Doc().Revisions); n != 2 {
		t.Errorf("after the change: %d revisions", n)
	}
	if name, _, ok := m.Host("tools.example.com"); !ok || name != "elsewhere" {
		t.Errorf("custom domain not routed: %q %v", name, ok)
	}
	bad := d
	bad.Traffic = []TrafficTarget{{Revision: "elsewhere--r9", Percent: 100}}
	if err := m.Sync(ctx, stored(bad)); err == nil {
		t.Error("traffic to a missing revision was accepted")
	}
	if n := len(a.Doc().Revisions); n != 2 || len(a.Doc().Traffic) != 0 {
		t.Errorf("a refused document changed the app: %+v", a.Doc())
	}
	// The manager's own write: stored and in memory alike.
	if _, err := m.SetAuth(ctx, "elsewhere", Auth{Mode: AuthAPIKey}); err != nil {
		t.Fatal(err)
	}
	apps, _ := st.ListApps(ctx)
	if err := m.Sync(ctx, apps[0]); err != nil || a.Doc().Auth == nil || a.Doc().Auth.Mode != AuthAPIKey || len(a.Doc().Revisions) != 2 {
		t.Fatalf("own write back: %v %+v", err, a.Doc())
	}
	m.Forget("elsewhere")
	if _, err := m.Get("elsewhere"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after Forget: %v", err)
	}
	if _, _, ok := m.Host("tools.example.com"); ok {
		t.Error("a forgotten app's domain is still routed")
	}
}
