package server

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/berth-dev/berth/app"
	"github.com/berth-dev/berth/edge/certs"
)

// TestAppNamesFollowTheApp: the names bound are those of the app as it is
// when a change is reported, whatever the document the report carries: a
// stale report (concurrent changes finishing out of order) binds the
// current names, and a report that comes after the app was deleted binds
// nothing (its certificates would be renewed for an app that is gone).
func TestAppNamesFollowTheApp(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := certs.New(certs.Options{DataDir: t.TempDir(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	docs := map[string]app.Doc{}
	n := &appNames{m: m, domain: "apps.test", log: log, bound: map[string][]string{},
		doc: func(name string) (app.Doc, bool) { d, ok := docs[name]; return d, ok }}
	ctx := context.Background()
	served := func(host string) bool { _, ok := m.Serves(host); return ok }

	stale := app.Doc{Name: "tasks"}
	docs["tasks"] = app.Doc{Name: "tasks", Hostnames: []app.Hostname{{Host: "mcp.example.com"}}}
	n.AppChanged(ctx, docs["tasks"])
	n.AppChanged(ctx, stale) // reported last, but older
	if !served("mcp.example.com") || !served("tasks.apps.test") {
		t.Fatalf("after a stale report: bound %v, want tasks.apps.test and mcp.example.com", m.Bound())
	}

	delete(docs, "tasks")
	n.AppDeleted("tasks")
	n.AppChanged(ctx, stale) // a deploy's report arriving after the delete
	n.AppChanged(ctx, app.Doc{Name: "tasks", Hostnames: []app.Hostname{{Host: "late.example.com"}}})
	for _, h := range []string{"tasks.apps.test", "mcp.example.com", "late.example.com"} {
		if served(h) {
			t.Errorf("%s is bound after its app was deleted (bound %v)", h, m.Bound())
		}
	}
}

// TestAppNamesMovedHost: a custom domain moved from one app to another
// (deleted from the first after it was added to the second, the order
// berth apply can take) stays bound.
func TestAppNamesMovedHost(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := certs.New(certs.Options{DataDir: t.TempDir(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	h := []app.Hostname{{Host: "mcp.example.com"}}
	docs := map[string]app.Doc{"a": {Name: "a", Hostnames: h}, "b": {Name: "b"}}
	n := &appNames{m: m, domain: "apps.test", log: log, bound: map[string][]string{},
		doc: func(name string) (app.Doc, bool) { d, ok := docs[name]; return d, ok }}
	ctx := context.Background()
	n.AppChanged(ctx, docs["a"])
	n.AppChanged(ctx, docs["b"])
	docs["b"] = app.Doc{Name: "b", Hostnames: h}
	n.AppChanged(ctx, docs["b"])
	docs["a"] = app.Doc{Name: "a"}
	n.AppChanged(ctx, docs["a"])
	if _, ok := m.Serves("mcp.example.com"); !ok {
		t.Fatalf("the host moved to b is not bound: %v", m.Bound())
	}
}
