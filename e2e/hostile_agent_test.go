package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHostileAgentSocket: code in a session replaces its agent's socket
// with a symlink to another session's socket (relative, then absolute).
// The host must keep reaching the session's own sandbox (or lose the
// session cleanly), never the other one.
func TestHostileAgentSocket(t *testing.T) {
	b := startBerth(t, "")
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			name := "sockswap-" + rt
			key := b.createPool(name, "--runtime", rt, "--ready", "0", "--timeout", "10s")
			tag := randomTag(t)
			// Each session leaves a marker in its socket directory, which
			// is how the test (on the host) finds their directories.
			for _, who := range []string{"victim", "attacker"} {
				r := b.execute(name, key, who, fmt.Sprintf("export WHO=%s; echo %s > /mnt/data/who; touch /.berth/run/%s-%s; echo ok", who, who, tag, who))
				if r.Stdout != "ok\n" {
					t.Fatalf("%s: %+v", who, r)
				}
			}
			victimRun := findMarker(t, tag+"-victim")
			attackerRun := findMarker(t, tag+"-attacker")
			rel, err := filepath.Rel(attackerRun, filepath.Join(victimRun, "agent.sock"))
			if err != nil {
				t.Fatal(err)
			}
			for _, target := range []string{rel, filepath.Join(victimRun, "agent.sock")} {
				r := b.execute(name, key, "attacker", fmt.Sprintf(
					"cd /.berth/run && ln -s %q agent.sock.new && mv -f agent.sock.new agent.sock && ls -l agent.sock", target))
				if !strings.Contains(r.Stdout, "->") {
					t.Fatalf("could not replace the socket: %+v", r)
				}
				// Several requests: fresh connections as well as kept ones.
				for i := range 3 {
					raw := b.executeRaw(name, key, "attacker", "echo who=$(cat /mnt/data/who) env=$WHO")
					if strings.Contains(string(raw.Body), "victim") {
						t.Fatalf("the attacker's execution ran in the victim's sandbox (%s, try %d): %s", target, i, raw.Body)
					}
					if raw.Status != 200 {
						t.Fatalf("execute after the swap: HTTP %d: %s", raw.Status, raw.Body)
					}
				}
			}
			if r := b.execute(name, key, "victim", "echo $WHO $(cat /mnt/data/who)"); r.Stdout != "victim victim\n" {
				t.Fatalf("victim: %+v", r)
			}
		})
	}
}

// findMarker returns the host directory that holds a file named marker, a
// sandbox's socket directory.
func findMarker(t *testing.T, marker string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, _ := filepath.Glob(filepath.Join("/var/lib/berth", "*", "*", "*", "run", marker))
		if len(m) == 1 {
			return filepath.Dir(m[0])
		}
		if time.Now().After(deadline) {
			t.Fatalf("marker %s: found %v", marker, m)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func randomTag(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "m" + hex.EncodeToString(b)
}
