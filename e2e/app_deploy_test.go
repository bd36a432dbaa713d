package e2e

import (
	"bytes"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/controlplane"
	"github.com/berth-dev/berth/server"
)

// appStateDir is where a server keeps an app's files.
func (b *berth) appStateDir(name string) string {
	abs, err := filepath.Abs(b.dataDir)
	if err != nil {
		b.t.Fatal(err)
	}
	return filepath.Join("/var/lib/berth", server.Instance(abs), "apps", name)
}

// waitAppLog waits until an app's logs contain every one of want.
func (b *berth) waitAppLog(name string, want ...string) string {
	b.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		logs := b.cli("app", "logs", name)
		missing := slices.IndexFunc(want, func(w string) bool { return !strings.Contains(logs, w) })
		if missing < 0 {
			return logs
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("app logs lack %q:\n%s", want[missing], logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// bigTree makes a directory of n files of size bytes each, in
// subdirectories of 1,000: a deploy that takes a while to copy.
func bigTree(t *testing.T, n, size int) string {
	t.Helper()
	dir := t.TempDir()
	data := bytes.Repeat([]byte("x"), size)
	for i := 0; i < n; i++ {
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", i/1000))
		if i%1000 == 0 {
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%05d", i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// treeFiles lists the paths under dir (relative, sorted).
func treeFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAppDeployFilesPrivate: a revision's copy of --dir is readable by the
// app's sandbox and by no other local user, and a symlink out of the tree
// is copied as a link, never followed. On both runtimes.
func TestAppDeployFilesPrivate(t *testing.T) {
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "secret.txt"), []byte("TOP-SECRET-42\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(src, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "sub", "run.sh"), []byte("#!/bin/sh\necho RAN-FROM-SUB\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/shadow", filepath.Join(src, "shadow")); err != nil {
		t.Fatal(err)
	}
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			b := startBerth(t, "", "--app-runtime", rt)
			b.cli("app", "deploy", "priv", "--dir", src, "--min", "1", "--probe", "none", "--command",
				`cat /app/secret.txt; ./sub/run.sh; cat /app/shadow >/dev/null 2>&1 || echo NO-SHADOW; sleep 600`)
			// The app reads its files (and runs its script) in the sandbox.
			b.waitAppLog("priv", "[stdout] TOP-SECRET-42", "[stdout] RAN-FROM-SUB", "[stdout] NO-SHADOW")

			rev := filepath.Join(b.appStateDir("priv"), "revisions", "priv--r1")
			// Nobody else on the host can read or list the copy.
			for _, args := range [][]string{{"cat", filepath.Join(rev, "secret.txt")}, {"ls", rev}, {"cat", filepath.Join(rev, "sub", "run.sh")}} {
				cmd := exec.Command("setpriv", append([]string{"--reuid", "65534", "--regid", "65534", "--clear-groups"}, args...)...)
				out, err := cmd.CombinedOutput()
				if err == nil || !strings.Contains(string(out), "Permission denied") {
					t.Errorf("uid 65534 ran %v: err %v, output %q; want permission denied", args, err, out)
				}
			}
			err := filepath.WalkDir(rev, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				info, err := d.Info()
				if err != nil {
					return err
				}
				if d.Type()&fs.ModeSymlink == 0 && info.Mode().Perm()&0o077 != 0 {
					t.Errorf("%s: mode %v gives others access", p, info.Mode())
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			// The link is a link still, to the same name.
			if target, err := os.Readlink(filepath.Join(rev, "shadow")); err != nil || target != "/etc/shadow" {
				t.Errorf("shadow: %q %v, want a symlink to /etc/shadow", target, err)
			}
		})
	}
}

// TestAppDeployKilledMidCopy: kill -9 the server while it copies a deploy's
// files, start it again and deploy again: the new revision has exactly its
// own source's files, and nothing of the aborted copy is left.
func TestAppDeployKilledMidCopy(t *testing.T) {
	dataDir := t.TempDir()
	b := startBerth(t, dataDir)
	big := bigTree(t, 20000, 4096)
	appDir := b.appStateDir("crash")
	deployed := make(chan struct{})
	go func() {
		defer close(deployed)
		_, _, _ = b.try("app", "deploy", "crash", "--dir", big, "--command", "sleep 600")
	}()
	// Wait until the copy is under way, then kill the server.
	deadline := time.Now().Add(60 * time.Second)
	for {
		found, _ := filepath.Glob(filepath.Join(appDir, "revisions", "*", "d000", "f00100"))
		if len(found) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the copy did not start")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := b.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-b.exited
	<-deployed
	if n := len(treeFiles(t, appDir)); n < 100 {
		t.Fatalf("only %d files of the aborted copy are left: the kill came too late to test anything", n)
	}

	b = startBerth(t, dataDir)
	small := t.TempDir()
	if err := os.WriteFile(filepath.Join(small, "only.txt"), []byte("only\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b.cli("app", "deploy", "crash", "--dir", small, "--command", "sleep 600")
	var v controlplane.AppView
	b.cliJSON(&v, "app", "show", "crash")
	if len(v.Revisions) != 1 {
		t.Fatalf("revisions: %+v", v.Revisions)
	}
	revs := filepath.Join(appDir, "revisions")
	if got := treeFiles(t, revs); !slices.Equal(got, []string{v.Revisions[0].Name, v.Revisions[0].Name + "/only.txt"}) {
		t.Fatalf("revisions dir after the re-deploy: %d entries, want only %s/only.txt: %v", len(got), v.Revisions[0].Name, got[:min(len(got), 10)])
	}
}

// TestAppDeployKeepsServing: while a deploy copies a large --dir, requests
// to the app's current revision are served (the deploy holds no lock that
// traffic needs).
func TestAppDeployKeepsServing(t *testing.T) {
	b := startBerth(t, "")
	b.cli("app", "deploy", "busy", "--dir", everythingServer(t), "--command", everythingCommand, "--min", "1")
	b.waitReplicas("busy", 1)
	url := b.info.PublicURL + "/apps/busy/mcp"
	sid, _ := initialize(t, url)
	big := bigTree(t, 20000, 4096)

	revs := filepath.Join(b.appStateDir("busy"), "revisions")
	start := time.Now()
	deployed := make(chan time.Duration, 1)
	go func() {
		_, _, _ = b.try("app", "deploy", "busy", "--dir", big, "--command", everythingCommand, "--min", "1")
		deployed <- time.Since(start)
	}()
	// Wait until the copy is under way.
	for {
		found, _ := filepath.Glob(filepath.Join(revs, "*", "d000", "f00100"))
		if len(found) > 0 {
			break
		}
		select {
		case d := <-deployed:
			t.Fatalf("the deploy ended (after %v) before its copy was seen", d)
		default:
		}
		time.Sleep(2 * time.Millisecond)
	}
	// A request counts if it completed while the copy was still going:
	// the tree's last file (WalkDir copies in lexical order) not there yet.
	copying := func() bool {
		found, _ := filepath.Glob(filepath.Join(revs, "*", "d019", "f19999"))
		return len(found) == 0
	}
	var during []time.Duration
	var first time.Duration
	for {
		t0 := time.Now()
		code, rev := call(t, url, sid, "ping")
		lat := time.Since(t0)
		if first == 0 {
			first = lat
		}
		if code != http.StatusOK || rev != "busy--r1" {
			t.Fatalf("ping during the deploy: HTTP %d from %q", code, rev)
		}
		if copying() {
			during = append(during, lat)
		}
		select {
		case d := <-deployed:
			slices.Sort(during)
			if len(during) == 0 {
				t.Fatalf("deploy took %v, and no request to the current revision completed while it copied (the first took %v)", d, first)
			}
			t.Logf("deploy took %v; %d requests completed while it copied: median %v, max %v",
				d, len(during), during[len(during)/2], during[len(during)-1])
			return
		default:
		}
	}
}

// TestAppFailedFirstDeploy: a first deploy that fails on the server leaves
// no app behind: not listed, and the gateway answers 404 for it.
func TestAppFailedFirstDeploy(t *testing.T) {
	b := startBerth(t, "")
	token, err := os.ReadFile(filepath.Join(b.dataDir, server.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	// A source the server does not have: the deploy fails as it prepares
	// the revision's files. The API is reached directly here.
	req, _ := http.NewRequest(http.MethodPost, b.info.AdminURL+"/v1/apps/ghost/revisions",
		strings.NewReader(`{"command":"sleep 600","source":{"archive":"sha256:`+strings.Repeat("0", 64)+`"}}`))
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("deploy with a missing source: HTTP %d, want 400", resp.StatusCode)
	}
	if out := b.cli("app", "list"); strings.Contains(out, "ghost") {
		t.Fatalf("the failed app is listed:\n%s", out)
	}
	if _, _, code := b.try("app", "show", "ghost"); code == 0 {
		t.Fatal("app show found the failed app")
	}
	r := b.do(http.MethodPost, "/apps/ghost/mcp", http.Header{"Content-Type": {"application/json"}}, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	if r.Status != http.StatusNotFound {
		t.Fatalf("gateway for the failed app: HTTP %d %s, want 404", r.Status, r.Body)
	}
	// The name is free and numbering starts at 1.
	b.cli("app", "deploy", "ghost", "--dir", t.TempDir(), "--command", "sleep 600")
	var v controlplane.AppView
	b.cliJSON(&v, "app", "show", "ghost")
	if len(v.Revisions) != 1 || v.Revisions[0].Name != "ghost--r1" {
		t.Fatalf("revisions after a good deploy: %+v", v.Revisions)
	}
}

// TestAppRevisionShape: a revision's settings are what its sandboxes are
// made with. A new revision that changes them (here egress) gets sandboxes
// of its own, never the spare that the previous revision keeps started.
func TestAppRevisionShape(t *testing.T) {
	const cmd = `echo IF $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\n' ,); sleep 600`
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			b := startBerth(t, "", "--app-runtime", rt)
			ifaces := func(rev string) string {
				logs := b.waitAppLog("shape", " "+rev+"-")
				for _, line := range strings.Split(logs, "\n") {
					if _, after, ok := strings.Cut(line, "[stdout] IF "); ok && strings.Contains(line, " "+rev+"-") {
						return after
					}
				}
				return ""
			}
			deadline := time.Now().Add(60 * time.Second)
			wait := func(rev string) string {
				for time.Now().Before(deadline) {
					if got := ifaces(rev); got != "" {
						return got
					}
					time.Sleep(100 * time.Millisecond)
				}
				t.Fatalf("no output from %s:\n%s", rev, b.cli("app", "logs", "shape"))
				return ""
			}
			b.cli("app", "deploy", "shape", "--command", cmd, "--min", "1", "--probe", "none")
			if got := wait("shape--r1"); got != "lo," {
				t.Fatalf("revision 1 (egress disabled): interfaces %q, want only lo", got)
			}
			b.cli("app", "deploy", "shape", "--command", cmd, "--min", "1", "--probe", "none", "--egress", "enabled")
			got := wait("shape--r2")
			if got == "lo," {
				t.Fatalf("revision 2 (egress enabled): interfaces %q, want lo and one more", got)
			}
			t.Logf("revision 2 (egress enabled): interfaces %s", got)
		})
	}
}
