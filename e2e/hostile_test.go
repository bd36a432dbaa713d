package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestHostileCode runs attacks in one session of each runtime and checks
// that each is contained and reported, and that a neighbouring session keeps
// working after every one.
func TestHostileCode(t *testing.T) {
	b := startBerth(t, "")
	canary := filepath.Join(b.dataDir, "canary-secret.txt")
	if err := os.WriteFile(canary, []byte("HOST-CANARY-7f3a"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A service on the host's loopback that sandboxes must not reach.
	port := hostService(t, "127.0.0.1:0", "HOST-SERVICE-REACHED")

	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			name := "hostile-" + rt
			key := b.createPool(name, "--runtime", rt, "--ready", "1", "--memory", "128Mi", "--timeout", "4s")
			neighbour := func() {
				t.Helper()
				if r := b.execute(name, key, "neighbour", "echo alive"); r.Stdout != "alive\n" {
					t.Fatalf("neighbour session broke: %+v", r)
				}
			}
			neighbour()
			b.execute(name, key, "victim", "echo victim-secret > /mnt/data/secret.txt")

			t.Run("host files", func(t *testing.T) {
				r := b.execute(name, key, "thief", fmt.Sprintf(
					`for f in %s /etc/shadow /root/.bashrc /root %s/berth.db %s/master.key /var/lib/berth /proc/1/root/etc/shadow; do cat "$f" 2>/dev/null || ls "$f" 2>/dev/null; done; echo done`,
					canary, b.dataDir, b.dataDir))
				for _, leak := range []string{"HOST-CANARY", "root:", "SQLite", "bashrc"} {
					if strings.Contains(r.Stdout, leak) {
						t.Fatalf("sandbox read host data (%s): %q", leak, r.Stdout)
					}
				}
				if !strings.HasSuffix(r.Stdout, "done\n") {
					t.Fatalf("probe did not finish: %+v", r)
				}
				// The only user in the sandbox is the unprivileged one.
				if r := b.execute(name, key, "thief", "id -u; cat /etc/passwd | cut -d: -f1 | tr '\\n' ' '"); !strings.HasPrefix(r.Stdout, "1000\n") {
					t.Fatalf("sandbox user: %q", r.Stdout)
				}
			})

			t.Run("another session's files", func(t *testing.T) {
				r := b.execute(name, key, "thief", "ls -a /mnt/data; cat /mnt/data/secret.txt; find / -name secret.txt -not -path '/proc/*' 2>/dev/null | head; echo end")
				if strings.Contains(r.Stdout, "victim-secret") || strings.Contains(r.Stdout, "secret.txt\n") {
					t.Fatalf("session read another session's file: %q", r.Stdout)
				}
				if r := b.execute(name, key, "victim", "cat /mnt/data/secret.txt"); r.Stdout != "victim-secret\n" {
					t.Fatalf("victim lost its file: %+v", r)
				}
			})

			t.Run("network egress disabled", func(t *testing.T) {
				r := b.execute(name, key, "netprobe", fmt.Sprintf(`python3 - <<'EOF'
import socket
print("interfaces", sorted(n for _, n in socket.if_nameindex()))
try:
    s = socket.create_connection(("127.0.0.1", %d), timeout=2)
    print("CONNECTED", s.recv(100))
except OSError as e:
    print("blocked", type(e).__name__)
try:
    socket.getaddrinfo("example.com", 80)
    print("DNS-RESOLVED")
except OSError as e:
    print("no dns", type(e).__name__)
EOF`, port))
				if strings.Contains(r.Stdout, "CONNECTED") || strings.Contains(r.Stdout, "HOST-SERVICE") || strings.Contains(r.Stdout, "DNS-RESOLVED") {
					t.Fatalf("sandbox reached the network: %q", r.Stdout)
				}
				if !strings.Contains(r.Stdout, "interfaces ['lo']") || !strings.Contains(r.Stdout, "blocked") {
					t.Fatalf("unexpected network probe output: %+v", r)
				}
			})

			t.Run("privileged syscalls", func(t *testing.T) {
				r := b.execute(name, key, "syscalls", "unshare -U true && echo UNSHARED; mount -t tmpfs none /tmp 2>/dev/null && echo MOUNTED; echo checked")
				if strings.Contains(r.Stdout, "UNSHARED") || strings.Contains(r.Stdout, "MOUNTED") || r.Stdout != "checked\n" {
					t.Fatalf("namespace or mount escaped the filter: %+v", r)
				}
			})

			t.Run("fork bomb", func(t *testing.T) {
				r := b.execute(name, key, "forker", ":(){ :|:& };:; sleep 2; echo survived")
				if r.Status == "Success" || r.Error == nil || (r.Error.Type != "ProcessLimit" && r.Error.Type != "Timeout") {
					t.Fatalf("fork bomb not reported: %+v", r)
				}
				neighbour()
				if r := b.execute(name, key, "forker", "/bin/echo recovered; ps -e --no-headers | wc -l"); !strings.HasPrefix(r.Stdout, "recovered\n") {
					t.Fatalf("the session did not recover after its fork bomb was killed: %+v", r)
				}
			})

			t.Run("memory bomb", func(t *testing.T) {
				r := b.execute(name, key, "hog-1", `python3 -c "x = b'x' * (1 << 30); print(len(x))"`)
				if r.Status != "Failure" || r.Error == nil || r.Error.Type != "OutOfMemory" {
					t.Fatalf("memory bomb not reported as OOM: %+v", r)
				}
				if !strings.Contains(r.Error.Message, "128Mi") {
					t.Fatalf("OOM message does not name the limit: %q", r.Error.Message)
				}
				neighbour()
				if r := b.execute(name, key, "hog-1", "echo still-here"); r.Stdout != "still-here\n" {
					t.Fatalf("session after OOM: %+v", r)
				}
			})

			t.Run("cpu spin past timeout", func(t *testing.T) {
				r := b.execute(name, key, "spinner", "(setsid sh -c 'while :; do :; done' &); while :; do :; done")
				if r.Status != "Timeout" || r.Error == nil || r.Error.Type != "Timeout" {
					t.Fatalf("spin: %+v", r)
				}
				// Every process of the execution is gone, the escaped one too.
				r = b.execute(name, key, "spinner", "ps -eo comm= | sort | uniq -c | tr -s ' '")
				if strings.Contains(r.Stdout, " sh\n") {
					t.Fatalf("a spinner survived the timeout:\n%s", r.Stdout)
				}
				neighbour()
			})

			t.Run("output flood", func(t *testing.T) {
				r := b.execute(name, key, "flood", "yes flood | head -c 50000000; echo tail >&2")
				if !r.StdoutTruncated || len(r.Stdout) > 1<<20 || len(r.Stdout) < 1<<19 || r.Stderr != "tail\n" || r.Status != "Success" {
					t.Fatalf("flood: status %s, %d bytes, truncated=%v, stderr %q", r.Status, len(r.Stdout), r.StdoutTruncated, r.Stderr)
				}
				neighbour()
			})
		})
	}
}
