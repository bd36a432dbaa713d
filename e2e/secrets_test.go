package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/berth-dev/berth/server"
)

// callText calls a tool of an app's MCP server and returns its text.
func callText(t *testing.T, cs *mcp.ClientSession, tool string, args map[string]any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil || res.IsError {
		t.Fatalf("%s %v: %v %+v", tool, args, err, res)
	}
	return mcpText(res)
}

// secretCLI runs `berth secret set` with the value on stdin.
func (b *berth) setSecret(t *testing.T, app, name, stdin string) string {
	t.Helper()
	cmd := exec.Command(b.bin, "secret", "set", app, name)
	cmd.Env = append(os.Environ(), "BERTH_DATA_DIR="+b.dataDir)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("secret set %s %s: %v: %s", app, name, err, out)
	}
	return string(out)
}

func randomValue(prefix string) string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// TestAppSecrets: an app's secrets reach it as environment variables and
// as files (0400, its uid, on a tmpfs), from a real MCP client's tool
// calls; a change reaches it on `app restart`; a missing secret fails the
// deploy clearly; another app's sandbox cannot read them; and the values
// appear nowhere else: not in the server's whole output, `app show`,
// `secret list`, /metrics, error messages, or the data dir's files.
func TestAppSecrets(t *testing.T) {
	for _, rt := range []string{"bwrap", "gvisor"} {
		t.Run(rt, func(t *testing.T) { testAppSecrets(t, rt) })
	}
}

func testAppSecrets(t *testing.T, runtime string) {
	dir := echoApp(t)
	b := startBerth(t, "", "--app-runtime", runtime)
	value, value2, fileValue, peerValue := randomValue("s3cret-"), randomValue("r0tated-"), randomValue("f1le-"), randomValue("p33r-")
	var seen []string // every output the values must not appear in

	// A revision that references a missing secret is refused, clearly.
	_, errOut, code := b.try("app", "deploy", "vault", "--dir", dir, "--command", "./echoapp", "--env", "DB_PASSWORD=secretref:db-password")
	if code != 1 || !strings.Contains(errOut, `secret "db-password"`) || !strings.Contains(errOut, "berth secret set vault db-password") {
		t.Fatalf("deploy with a missing secret: exit %d: %s", code, errOut)
	}
	out := b.setSecret(t, "vault", "db-password", value+"\n")
	if !strings.Contains(out, "berth app restart vault") {
		t.Fatalf("secret set does not say when it applies: %s", out)
	}
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(fileValue), 0o600); err != nil {
		t.Fatal(err)
	}
	seen = append(seen, out, b.cli("secret", "set", "vault", "api-token", "--file", file))
	// A bad name: the error names the problem, not the value.
	_, errOut, _ = b.try("secret", "set", "vault", "Bad_Name", "--file", file)
	if !strings.Contains(errOut, "not a valid secret name") {
		t.Fatalf("bad secret name: %s", errOut)
	}
	seen = append(seen, errOut)

	b.cli("app", "deploy", "vault", "--dir", dir, "--command", "./echoapp", "--min", "1",
		"--env", "DB_PASSWORD=secretref:db-password", "--env", "PLAIN=visible", "--secret-volume", "/mnt/secrets")
	b.setSecret(t, "peer", "peer-key", peerValue)
	b.cli("app", "deploy", "peer", "--dir", dir, "--command", "./echoapp", "--min", "1", "--secret-volume", "/mnt/secrets")
	b.waitReplicas("vault", 1)
	b.waitReplicas("peer", 1)

	vault := connectMCP(t, b.appShow("vault").URLs.Path, http.DefaultClient)
	if got := callText(t, vault, "getenv", map[string]any{"name": "DB_PASSWORD"}); got != value {
		t.Fatalf("env DB_PASSWORD = %q, want the secret", got)
	}
	if got := callText(t, vault, "readfile", map[string]any{"path": "/mnt/secrets/db-password"}); got != value {
		t.Fatalf("/mnt/secrets/db-password = %q", got)
	}
	if got := callText(t, vault, "readfile", map[string]any{"path": "/mnt/secrets/api-token"}); got != fileValue {
		t.Fatalf("/mnt/secrets/api-token = %q", got)
	}
	if got := callText(t, vault, "run", map[string]any{"command": "f=/mnt/secrets/db-password; stat -c '%a %u' $f; id -u; chmod 600 $f 2>/dev/null; " +
		"(echo x >> $f) 2>/dev/null && echo WRITABLE; touch /mnt/secrets/x 2>/dev/null && echo WRITABLE; stat -c %a $f"}); !secretFileOK(got) {
		t.Fatalf("secret file mode, owner, writability: %q", got)
	}
	checkSecretsOnTmpfs(t, b, value)

	// App B's sandbox: no file, no environment, no process of A's.
	peer := connectMCP(t, b.appShow("peer").URLs.Path, http.DefaultClient)
	if got := callText(t, peer, "readfile", map[string]any{"path": "/mnt/secrets/peer-key"}); got != peerValue {
		t.Fatalf("peer's own secret: %q", got)
	}
	hostDir := secretsHostDir(b)
	probes := []string{
		"cat /mnt/secrets/db-password /mnt/secrets/api-token",
		"ls -la /mnt/secrets " + hostDir + " " + filepath.Dir(hostDir),
		"find " + hostDir + " /var/lib/berth -name db-password 2>&1 | head",
		"cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; ls /proc | head -50",
		"grep -rs " + value[:12] + " /proc/*/environ /proc/*/cmdline /mnt /tmp /app /etc /run /dev/shm 2>&1 | head",
	}
	for _, p := range probes {
		got := callText(t, peer, "run", map[string]any{"command": p})
		t.Logf("peer$ %s\n%.600s", p, got)
		if strings.Contains(got, value) || strings.Contains(got, fileValue) {
			t.Fatalf("app peer read app vault's secret with %q:\n%s", p, got)
		}
		seen = append(seen, got)
	}

	// A changed secret: the running replica keeps its value until restart.
	out = b.setSecret(t, "vault", "db-password", value2)
	seen = append(seen, out)
	if got := callText(t, vault, "getenv", map[string]any{"name": "DB_PASSWORD"}); got != value {
		t.Fatalf("before restart: DB_PASSWORD = %q, want the old value", got)
	}
	if out := b.cli("app", "restart", "vault"); !strings.Contains(out, "restarted") {
		t.Fatalf("app restart: %s", out)
	}
	b.waitReplicas("vault", 1)
	vault2 := connectMCP(t, b.appShow("vault").URLs.Path, http.DefaultClient)
	if got := callText(t, vault2, "getenv", map[string]any{"name": "DB_PASSWORD"}); got != value2 {
		t.Fatalf("after restart: DB_PASSWORD = %q, want the new value", got)
	}
	if got := callText(t, vault2, "readfile", map[string]any{"path": "/mnt/secrets/db-password"}); got != value2 {
		t.Fatalf("after restart: file = %q", got)
	}
	// The stopped replicas' files are gone from the host: one directory
	// per running revision of each app.
	if ents, err := os.ReadDir(secretsHostDir(b)); err != nil || len(ents) != 2 {
		t.Fatalf("secret volumes on the host after restart: %v %v", ents, err)
	}

	// Nowhere else.
	list := b.cli("secret", "list", "vault", "-o", "json")
	if !strings.Contains(list, `"db-password"`) || !strings.Contains(list, `"api-token"`) {
		t.Fatalf("secret list: %s", list)
	}
	show := b.cli("app", "show", "vault", "-o", "json")
	if !strings.Contains(show, `"DB_PASSWORD": "db-password"`) {
		t.Fatalf("app show lacks the reference: %s", show)
	}
	seen = append(seen, list, show, b.cli("app", "show", "vault"), b.cli("app", "list", "-o", "json"),
		b.cli("app", "logs", "vault"), getMetrics(t, b))
	// The data dir (the database, its WAL) holds them sealed only.
	_ = filepath.WalkDir(b.dataDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			data, _ := os.ReadFile(p)
			for _, v := range []string{value, value2, fileValue, peerValue} {
				if bytes.Contains(data, []byte(v)) {
					t.Errorf("%s holds a secret in clear", p)
				}
			}
		}
		return nil
	})
	// delete: one secret, then an app's with the app.
	if out := b.cli("secret", "delete", "vault", "api-token"); !strings.Contains(out, "berth app restart vault") {
		t.Fatalf("secret delete: %s", out)
	}
	if list := b.cli("secret", "list", "vault"); strings.Contains(list, "api-token") || !strings.Contains(list, "db-password") {
		t.Fatalf("after secret delete: %s", list)
	}
	b.cli("app", "delete", "peer")
	if list := b.cli("secret", "list", "peer", "-o", "json"); strings.Contains(list, "peer-key") {
		t.Fatalf("a deleted app's secrets remain: %s", list)
	}
	b.stop()
	seen = append(seen, b.logs.String())
	for i, s := range seen {
		for _, v := range []string{value, value2, fileValue, peerValue} {
			if strings.Contains(s, v) {
				t.Errorf("output %d shows a secret value:\n%s", i, s)
			}
		}
	}
	if !strings.Contains(b.logs.String(), "replica ready") {
		t.Fatalf("the server's log is not what was searched:\n%s", b.logs.String())
	}
}

// secretFileOK checks "MODE UID\nUID\nMODE": 0400, owned by the app's
// uid, and neither writable nor changeable (a read-only mount).
func secretFileOK(out string) bool {
	f := strings.Fields(out)
	return len(f) == 4 && f[0] == "400" && f[1] == f[2] && f[1] != "0" && f[3] == "400"
}

// secretsHostDir is where the server keeps its apps' secret volumes.
func secretsHostDir(b *berth) string {
	abs, _ := filepath.Abs(b.dataDir)
	return filepath.Join("/var/lib/berth", server.Instance(abs), "apps-secrets")
}

// checkSecretsOnTmpfs checks that the host keeps the secret files in
// memory (a tmpfs), not on its disk.
func checkSecretsOnTmpfs(t *testing.T, b *berth, value string) {
	t.Helper()
	dir := secretsHostDir(b)
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	const tmpfsMagic = 0x01021994
	if st.Type != tmpfsMagic {
		t.Fatalf("%s is not a tmpfs (type %#x)", dir, st.Type)
	}
	found := false
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "db-password" {
			data, _ := os.ReadFile(p)
			found = found || string(data) == value
		}
		return nil
	})
	if !found {
		t.Fatalf("no secret file under %s", dir)
	}
}
