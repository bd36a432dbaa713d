package e2e

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/controlplane"
	"github.com/berth-dev/berth/server"
)

// TestAdmission: with a host budget of 1 GiB of sandbox memory (berth up
// --memory-capacity 1Gi --memory-overcommit 1), sandboxes of pools and
// apps alike, warm and spare ones included, are admitted up to the budget;
// beyond it a new session or a replica's start gets 503 with Retry-After
// and a message that says the host is at capacity, while admitted ones
// keep working; capacity comes back when sessions end. Settings that could
// never fit are refused at once.
func TestAdmission(t *testing.T) {
	b := startBerth(t, "", "--memory-capacity", "1Gi", "--memory-overcommit", "1", "--disk-capacity", "8Gi", "--disk-overcommit", "1")
	b.cli("pool", "delete", "default") // its warm sandboxes would hold the whole budget
	instance := server.Instance(b.dataDir)

	// Never fits: refused with a message that says why.
	for _, flags := range [][]string{{"--memory", "2Gi"}, {"--memory", "256Mi", "--ready", "5"}, {"--memory", "256Mi", "--disk", "9Gi"}} {
		_, errOut, code := b.try(append([]string{"pool", "create", "huge"}, flags...)...)
		if code != 1 || !strings.Contains(errOut, "cannot run on this host") || !strings.Contains(errOut, "-overcommit") {
			t.Fatalf("pool create %v: exit %d: %s", flags, code, errOut)
		}
	}
	if _, errOut, code := b.try("app", "deploy", "huge", "--command", "true", "--memory", "2Gi"); code != 1 || !strings.Contains(errOut, "cannot run on this host") {
		t.Fatalf("app deploy 2Gi: exit %d: %s", code, errOut)
	}

	// An app: its replica and its revision's spare sandbox hold 2 × 256Mi.
	b.cli("app", "deploy", "web", "--command", "exec python3 -m http.server $PORT --bind 127.0.0.1", "--memory", "256Mi", "--min", "1")
	if r := b.do("GET", "/apps/web/", nil, nil); r.Status != 200 {
		t.Fatalf("app: %d %s", r.Status, r.Body)
	}
	waitSandboxes(t, instance, "web-*", 2)

	// A pool's sessions take the rest: two of 256Mi.
	key := b.createPool("adm", "--memory", "256Mi", "--ready", "0", "--max", "10")
	for _, id := range []string{"sess-1", "sess-2"} {
		if r := b.execute("adm", key, id, "echo in $PWD"); r.Stdout != "in /mnt/data\n" {
			t.Fatalf("admitted session %s: %+v", id, r)
		}
	}
	full := func(t *testing.T, r resp, what string) {
		t.Helper()
		var e struct {
			Error struct{ Code, Message string }
		}
		_ = json.Unmarshal(r.Body, &e)
		if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
			t.Fatalf("%s at capacity: %d (Retry-After %q) %s", what, r.Status, r.Header.Get("Retry-After"), r.Body)
		}
		if !strings.Contains(string(r.Body), "host at capacity") {
			t.Errorf("%s: message lacks %q: %s", what, "host at capacity", r.Body)
		}
		// A pool key holder is told the figures; an app's anonymous
		// clients are not (the log has them).
		figures := "1Gi of the 1Gi (1Gi × --memory-overcommit 1) of memory"
		anonymous := strings.HasPrefix(what, "an app")
		if shown := strings.Contains(string(r.Body), figures); shown == anonymous {
			t.Errorf("%s: figures %q shown: %v, want %v: %s", what, figures, shown, !anonymous, r.Body)
		}
		if !anonymous && !strings.Contains(string(r.Body), "needs 256Mi") {
			t.Errorf("%s: message lacks %q: %s", what, "needs 256Mi", r.Body)
		}
	}
	r := b.executeRaw("adm", key, "sess-3", "echo never")
	full(t, r, "a third session")
	if c := r.errorCode(); c != "HostAtCapacity" {
		t.Errorf("code %q", c)
	}
	// Admitted sessions and the app keep working.
	if r := b.execute("adm", key, "sess-1", "echo still"); r.Stdout != "still\n" {
		t.Fatalf("admitted session after a refusal: %+v", r)
	}
	if r := b.do("GET", "/apps/web/", nil, nil); r.Status != 200 {
		t.Fatalf("app after a refusal: %d %s", r.Status, r.Body)
	}

	// A second app cannot start a replica: 503 with the same message, and
	// its spare waits quietly.
	b.cli("app", "deploy", "web2", "--command", "exec python3 -m http.server $PORT --bind 127.0.0.1", "--memory", "256Mi")
	full(t, b.do("GET", "/apps/web2/", nil, nil), "an app's replica")
	b.cli("app", "delete", "web2")

	// A pool that wants warm sandboxes gets none while the host is full,
	// without an error loop, and gets them once sessions end.
	b.createPool("warm", "--memory", "256Mi", "--ready", "2")
	time.Sleep(2 * time.Second)
	if w := poolStatus(b, "warm").Status.Warm; w != 0 {
		t.Fatalf("%d warm sandboxes beyond the budget", w)
	}
	for _, id := range []string{"sess-1", "sess-2"} {
		if d := b.do("DELETE", "/pools/adm/sessions/"+id, keyHeader(key), nil); d.Status != 204 {
			t.Fatalf("delete session: %d %s", d.Status, d.Body)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for poolStatus(b, "warm").Status.Warm != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("warm sandboxes did not start once capacity was released: %+v", poolStatus(b, "warm"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The budget is full again (app 2, warm 2): a session takes a warm one.
	if r := b.execute("warm", strings.TrimSpace(b.cli("pool", "credentials", "warm")), "warm-1", "echo warm"); r.Stdout != "warm\n" {
		t.Fatalf("session from a warm sandbox: %+v", r)
	}
	full(t, b.executeRaw("adm", key, "sess-4", "echo never"), "a session while warm sandboxes hold the rest")
	// Deleting the warm pool gives its share back.
	b.cli("pool", "delete", "warm")
	if r := b.execute("adm", key, "sess-4", "echo back"); r.Stdout != "back\n" {
		t.Fatalf("session once capacity came back: %+v", r)
	}
	// A pool stored under a larger budget than the next start's is marked
	// unusable (logged, 503) without stopping the server, until updated.
	b.stop()
	b = startBerth(t, b.dataDir, "--memory-capacity", "200Mi", "--memory-overcommit", "1")
	b.waitLog("pool cannot run on this host")
	b.waitLog("app revision cannot run on this host", "app=web")
	r = b.executeRaw("adm", key, "sess-5", "echo never")
	if r.Status != http.StatusServiceUnavailable || r.errorCode() != "PoolUnusable" || !strings.Contains(string(r.Body), "berth pool update") {
		t.Fatalf("a pool that no longer fits: %d %s", r.Status, r.Body)
	}
	b.cli("pool", "update", "adm", "--memory", "128Mi")
	if r := b.execute("adm", key, "sess-5", "echo fits"); r.Stdout != "fits\n" {
		t.Fatalf("after the update: %+v", r)
	}
	logs := b.logs.String()
	for _, loop := range []string{"start warm sandbox", "spare sandbox failed to start"} {
		if n := strings.Count(logs, loop); n > 0 {
			t.Errorf("%q logged %d times: capacity should be waited for, not retried", loop, n)
		}
	}
}

func poolStatus(b *berth, name string) controlplane.PoolView {
	b.t.Helper()
	var v controlplane.PoolView
	b.cliJSON(&v, "pool", "show", name)
	return v
}

// waitSandboxes waits until n bwrap sandboxes of the instance have IDs that
// match pattern (counted by their cgroups, which are named after them).
func waitSandboxes(t *testing.T, instance, pattern string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		m, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/berth", instance+"-bwrap", pattern)) // v2
		if len(m) == 0 {
			m, _ = filepath.Glob(filepath.Join("/sys/fs/cgroup/memory/berth", instance+"-bwrap", pattern)) // v1
		}
		if len(m) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sandboxes match %s, want %d", len(m), pattern, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A host too small for the default pool (sessions of 512Mi) starts without
// it and says why, instead of refusing to start.
func TestAdmissionDefaultPoolTooLarge(t *testing.T) {
	b := startBerth(t, "", "--memory-capacity", "384Mi", "--memory-overcommit", "1")
	b.waitLog("the default pool was not created", "cannot run on this host")
	if _, errOut, code := b.try("pool", "show", "default"); code != 1 || !strings.Contains(errOut, "not found") {
		t.Fatalf("pool show default: exit %d: %s", code, errOut)
	}
	// A pool that fits works.
	key := b.createPool("small", "--memory", "128Mi", "--ready", "1")
	if r := b.execute("small", key, "sess-1", "echo ok"); r.Stdout != "ok\n" {
		t.Fatalf("%+v", r)
	}
}
