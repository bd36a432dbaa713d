package e2e

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/server"
)

// sandboxDirs lists the sandbox directories a server instance has on disk
// (bubblewrap's are not named after their sandboxes).
func sandboxDirs(t *testing.T, dataDir string) []string {
	t.Helper()
	abs, _ := filepath.Abs(dataDir)
	var names []string
	for _, rt := range runtimes {
		dirs, _ := filepath.Glob(filepath.Join("/var/lib/berth", server.Instance(abs), rt, "sb-*"))
		for _, d := range dirs {
			names = append(names, rt+"/"+filepath.Base(d))
		}
	}
	return names
}

// sandboxIDs lists the sandboxes a server instance has cgroups for, which
// are named after them.
func sandboxIDs(t *testing.T, dataDir string) []string {
	t.Helper()
	abs, _ := filepath.Abs(dataDir)
	seen := map[string]bool{}
	var ids []string
	for _, rt := range runtimes {
		group := filepath.Join("berth", server.Instance(abs)+"-"+rt, "*")
		v1, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", group))
		v2, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", group))
		for _, d := range append(v1, v2...) {
			if info, err := os.Stat(d); err == nil && info.IsDir() && !seen[filepath.Base(d)] {
				seen[filepath.Base(d)] = true
				ids = append(ids, filepath.Base(d))
			}
		}
	}
	return ids
}

// processesOf returns the processes that are in a cgroup named after one of
// the sandboxes.
func processesOf(ids []string) []string {
	var found []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cgroup")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, id := range ids {
			if bytes.Contains(b, []byte("/"+id+"\n")) || bytes.Contains(b, []byte("/"+id+"/")) {
				cmd, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "comm"))
				found = append(found, filepath.Base(filepath.Dir(p))+":"+strings.TrimSpace(string(cmd)))
			}
		}
	}
	return found
}

func cgroupDirsOf(ids []string) []string {
	var found []string
	for _, id := range ids {
		m, _ := filepath.Glob("/sys/fs/cgroup/*/berth/*/" + id)
		m2, _ := filepath.Glob("/sys/fs/cgroup/berth/*/" + id)
		found = append(found, append(m, m2...)...)
	}
	return found
}

func TestRestartKeepsPoolsAndKeys(t *testing.T) {
	dir := t.TempDir()
	b := startBerth(t, dir)
	key := b.createPool("keep", "--type", "python", "--ready", "1", "--max", "9")
	if r := b.execute("keep", key, "before", "6 * 7"); string(r.Result) != "42" {
		t.Fatalf("%+v", r)
	}
	ids := sandboxIDs(t, dir)
	if len(ids) < 2 || len(sandboxDirs(t, dir)) < 2 {
		t.Fatalf("expected sandboxes, found %v, on disk %v", ids, sandboxDirs(t, dir))
	}
	b.stop()
	if code := b.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("graceful stop exited %d:\n%s", code, b.logs.String())
	}
	// A graceful stop leaves nothing behind.
	if left := sandboxDirs(t, dir); len(left) > 0 {
		t.Fatalf("sandbox directories left after stop: %v", left)
	}
	if p := processesOf(ids); len(p) > 0 {
		t.Fatalf("processes left after stop: %v", p)
	}
	if c := cgroupDirsOf(ids); len(c) > 0 {
		t.Fatalf("cgroups left after stop: %v", c)
	}

	b2 := startBerth(t, dir)
	var show struct {
		Max  int    `json:"maxSessions"`
		Type string `json:"type"`
	}
	b2.cliJSON(&show, "pool", "show", "keep")
	if show.Max != 9 || show.Type != "python" {
		t.Fatalf("pool settings after restart: %+v", show)
	}
	if r := b2.execute("keep", key, "after", "6 * 7"); string(r.Result) != "42" {
		t.Fatalf("key or pool lost in restart: %+v", r)
	}
	// The default pool is not recreated once deleted.
	b2.cli("pool", "delete", "default")
	b2.stop()
	b3 := startBerth(t, dir)
	if out := b3.cli("pool", "list"); strings.Contains(out, "default") {
		t.Fatalf("deleted default pool came back:\n%s", out)
	}
}

func TestCrashLeavesNoOrphans(t *testing.T) {
	dir := t.TempDir()
	b := startBerth(t, dir)
	for _, rt := range runtimes {
		key := b.createPool("crash-"+rt, "--runtime", rt, "--ready", "1")
		b.execute("crash-"+rt, key, "running", "sleep 1000 & echo started")
	}
	ids, dirs := sandboxIDs(t, dir), sandboxDirs(t, dir)
	if len(processesOf(ids)) == 0 {
		t.Fatal("no sandbox processes found before the crash: the test cannot see them")
	}
	// Crash: no graceful shutdown at all.
	if err := b.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-b.exited

	b2 := startBerth(t, dir)
	deadline := time.Now().Add(10 * time.Second)
	for {
		procs, cgs := processesOf(ids), cgroupDirsOf(ids)
		left := 0
		for _, d := range sandboxDirs(t, dir) {
			for _, old := range dirs {
				if d == old {
					left++
				}
			}
		}
		if len(procs) == 0 && len(cgs) == 0 && left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after restart: processes %v, cgroups %v, %d old sandbox directories", procs, cgs, left)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// And it serves.
	var cred struct{ APIKey string }
	b2.cliJSON(&cred, "pool", "credentials", "crash-bwrap")
	if r := b2.execute("crash-bwrap", cred.APIKey, "again", "echo ok"); r.Stdout != "ok\n" {
		t.Fatalf("%+v", r)
	}
	if r := b2.do("GET", "/pools/crash-bwrap/sessions", keyHeader(cred.APIKey), nil); r.Status != http.StatusOK || strings.Contains(string(r.Body), `"identifier":"running"`) {
		t.Fatalf("sessions of the crashed run should be gone: %s", r.Body)
	}
}
