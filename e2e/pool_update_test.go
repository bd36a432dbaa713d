package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/controlplane"
)

// interfaces lists a sandbox's network interfaces (from /proc/net/dev,
// which both runtimes have).
func interfaces(t *testing.T, b *berth, pool, key, id string) []string {
	t.Helper()
	r := b.execute(pool, key, id, "cat /proc/net/dev")
	if r.ExitCode == nil || *r.ExitCode != 0 {
		t.Fatalf("cat /proc/net/dev: %+v", r)
	}
	var names []string
	for _, line := range strings.Split(r.Stdout, "\n") {
		if name, _, ok := strings.Cut(line, ":"); ok && !strings.Contains(name, "|") {
			names = append(names, strings.TrimSpace(name))
		}
	}
	return names
}

// waitWarm waits until a pool has n warm sandboxes.
func waitWarm(t *testing.T, b *berth, pool string, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var v controlplane.PoolView
		b.cliJSON(&v, "pool", "show", pool)
		if v.Status.Warm == n && v.Status.Starting == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool %s: %+v warm, want %d", pool, v.Status, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPoolUpdateDrainsWarm: a pool update that changes what a sandbox is
// (here egress) reaches the very next session: warm sandboxes made before
// the update are never handed out. Both ways, on both runtimes.
func TestPoolUpdateDrainsWarm(t *testing.T) {
	b := startBerth(t, "")
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			name := "drain-" + rt
			key := b.createPool(name, "--runtime", rt, "--egress", "enabled", "--ready", "2")
			waitWarm(t, b, name, 2)
			if got := interfaces(t, b, name, key, "before-1"); len(got) < 2 {
				t.Fatalf("egress enabled: interfaces %v, want lo and one more", got)
			}
			waitWarm(t, b, name, 2)

			b.cli("pool", "update", name, "--egress", "disabled")
			// At once, while the old warm sandboxes may still be there,
			// and again once the pool has refilled.
			for i, id := range []string{"off-1", "off-2", "off-3"} {
				if got := interfaces(t, b, name, key, id); len(got) != 1 || got[0] != "lo" {
					t.Fatalf("session %d after update to egress disabled: interfaces %v, want only lo", i+1, got)
				}
				if i == 1 {
					waitWarm(t, b, name, 2)
				}
			}
			// The session made before the update keeps its sandbox.
			if got := interfaces(t, b, name, key, "before-1"); len(got) < 2 {
				t.Fatalf("the live session lost its sandbox: interfaces %v", got)
			}

			waitWarm(t, b, name, 2)
			b.cli("pool", "update", name, "--egress", "enabled")
			for i, id := range []string{"on-1", "on-2", "on-3"} {
				if got := interfaces(t, b, name, key, id); len(got) < 2 {
					t.Fatalf("session %d after update to egress enabled: interfaces %v, want lo and one more", i+1, got)
				}
				if i == 1 {
					waitWarm(t, b, name, 2)
				}
			}
		})
	}
}
