package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/berth-dev/berth/server"
	"github.com/berth-dev/berth/store"
)

// remoteCLI runs the CLI as a remote client would: from cwd, with --server
// and --token only (no data directory to fall back on).
func (b *berth) remoteCLI(cwd string, args ...string) (string, string, int) {
	b.t.Helper()
	args = append(args, "--server", b.info.AdminURL, "--token", b.token())
	cmd := exec.Command(b.bin, args...)
	cmd.Dir = cwd
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + cwd, "BERTH_DATA_DIR=" + filepath.Join(cwd, "no-such-data-dir")}
	return b.runCmd(cmd)
}

func (b *berth) token() string {
	tok, err := os.ReadFile(filepath.Join(b.dataDir, server.TokenFile))
	if err != nil {
		b.t.Fatal(err)
	}
	return strings.TrimSpace(string(tok))
}

// adminCall sends a request to the control API and returns status and body.
func (b *berth) adminCall(method, path, contentType string, body io.Reader) (int, string) {
	b.t.Helper()
	req, err := http.NewRequest(method, b.info.AdminURL+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+b.token())
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

// mcpSimpleText calls the everything server's test_simple_text tool
// through the gateway with the go-sdk client.
func mcpSimpleText(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url}, nil)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	defer cs.Close()
	r, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "test_simple_text"})
	if err != nil || r.IsError {
		t.Fatalf("test_simple_text through the gateway: %v %+v", err, r)
	}
}

// copyDir copies the regular files of src (one level) into dst.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), raw, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAppUploadRemoteCLI: a CLI in another working directory, with only
// --server and --token, deploys a relative --dir: the directory is packed
// and uploaded, the app answers a real MCP client through the gateway, a
// second deploy of the same tree skips the upload, the server refuses a
// deploy that names a host path, and a restart (with the local directory
// gone) keeps the app working.
func TestAppUploadRemoteCLI(t *testing.T) {
	dataDir := t.TempDir()
	b := startBerth(t, dataDir)
	cwd := t.TempDir()
	copyDir(t, everythingServer(t), filepath.Join(cwd, "proj"))
	if err := os.WriteFile(filepath.Join(cwd, "proj", "notes.txt"), []byte("uploaded\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := b.remoteCLI(cwd, "app", "deploy", "up", "--dir", "proj", "--command", everythingCommand, "--min", "1")
	if code != 0 {
		t.Fatalf("remote deploy: exit %d: %s", code, errOut)
	}
	if !strings.Contains(errOut, "uploaded sha256:") {
		t.Fatalf("remote deploy did not say it uploaded: %s", errOut)
	}
	mcpSimpleText(t, b.info.PublicURL+"/apps/up/mcp")
	v := b.appShow("up")
	src := v.Revisions[0].Config.Source
	if src == nil || !strings.HasPrefix(src.Archive, "sha256:") || v.Revisions[0].Config.Dir != "" {
		t.Fatalf("revision config: %+v, want a source digest and no dir", v.Revisions[0].Config)
	}
	raw, err := os.ReadFile(filepath.Join(b.appStateDir("up"), "revisions", "up--r1", "notes.txt"))
	if err != nil || string(raw) != "uploaded\n" {
		t.Fatalf("revision's notes.txt: %q %v", raw, err)
	}

	// The same tree again: the server has its digest, nothing is sent.
	_, errOut, code = b.remoteCLI(cwd, "app", "deploy", "up", "--dir", "./proj/", "--command", everythingCommand, "--min", "1")
	if code != 0 || !strings.Contains(errOut, "on the server already: not uploaded again") || strings.Contains(errOut, "uploaded sha256") {
		t.Fatalf("second deploy of the same tree: exit %d: %s", code, errOut)
	}
	if n := strings.Count(b.logs.String(), "source uploaded"); n != 1 {
		t.Fatalf("the server logged %d uploads, want 1", n)
	}
	if v := b.appShow("up"); len(v.Revisions) != 2 || v.Revisions[1].Config.Source.Archive != src.Archive {
		t.Fatalf("second revision: %+v", v.Revisions)
	}

	// berth apply resolves a container's dir relative to the YAML file,
	// from yet another working directory; the tree is the same, so no
	// upload.
	if err := os.MkdirAll(filepath.Join(cwd, "deploy", "cfg"), 0o755); err != nil {
		t.Fatal(err)
	}
	manifest := `name: up
properties:
  template:
    containers:
      - command: ["./everything-server", "-http", "127.0.0.1:$PORT", "-stateless=false"]
        dir: ../../proj
    scale: {minReplicas: 1, maxReplicas: 3}
`
	if err := os.WriteFile(filepath.Join(cwd, "deploy", "cfg", "app.yaml"), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := b.remoteCLI(filepath.Join(cwd, "deploy"), "apply", "-f", "cfg/app.yaml")
	if code != 0 || !strings.Contains(out, "revision up--r3 created") || !strings.Contains(errOut, "not uploaded again") {
		t.Fatalf("remote apply: exit %d: %s\n%s", code, out, errOut)
	}
	mcpSimpleText(t, b.info.PublicURL+"/apps/up/mcp")

	// A deploy that names a host path is refused.
	status, body := b.adminCall(http.MethodPost, "/v1/apps/up/revisions", "application/json",
		strings.NewReader(`{"command":"sleep 600","dir":"`+filepath.Join(cwd, "proj")+`"}`))
	if status != http.StatusBadRequest || !strings.Contains(body, "--dir uploads the directory") {
		t.Fatalf("deploy naming a host dir: HTTP %d %s, want 400 pointing at the CLI's --dir", status, body)
	}

	// Restart with the local tree gone: the app runs from its stored files.
	if err := os.RemoveAll(filepath.Join(cwd, "proj")); err != nil {
		t.Fatal(err)
	}
	b.stop()
	b = startBerth(t, dataDir)
	mcpSimpleText(t, b.info.PublicURL+"/apps/up/mcp")
}

// TestAppUploadOldDirRevision: a revision stored by a Berth from before
// uploads (its config names a host "dir", whose files it copied) still
// starts after an upgrade; it is migrated once to an archive source, and
// the host path is never read again.
func TestAppUploadOldDirRevision(t *testing.T) {
	dataDir := t.TempDir()
	b := startBerth(t, dataDir)
	b.cli("app", "deploy", "old", "--dir", everythingServer(t), "--command", everythingCommand, "--min", "1")
	b.waitReplicas("old", 1)
	b.stop()

	// Rewrite the stored revision as an older Berth stored it: a host
	// path (which does not exist: it must not be needed) and no source.
	st, err := store.Open(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	apps, err := st.ListApps(context.Background())
	if err != nil || len(apps) != 1 {
		t.Fatalf("stored apps: %v %v", apps, err)
	}
	var doc map[string]any
	if err := json.Unmarshal(apps[0].Doc, &doc); err != nil {
		t.Fatal(err)
	}
	cfg := doc["revisions"].([]any)[0].(map[string]any)["config"].(map[string]any)
	delete(cfg, "source")
	cfg["dir"] = "/nonexistent/berth-old-host-path"
	raw, _ := json.Marshal(doc)
	if err := st.PutApp(context.Background(), "old", raw); err != nil {
		t.Fatal(err)
	}
	st.Close()

	b = startBerth(t, dataDir)
	mcpSimpleText(t, b.info.PublicURL+"/apps/old/mcp")
	v := b.appShow("old")
	c := v.Revisions[0].Config
	if c.Dir != "" || c.Source == nil {
		t.Fatalf("after the start: %+v, want the dir migrated to a source", c)
	}
	if status, body := b.adminCall(http.MethodGet, "/v1/sources/"+c.Source.Archive, "", nil); status != http.StatusOK {
		t.Fatalf("the migrated source: HTTP %d %s", status, body)
	}
	if !strings.Contains(b.logs.String(), "migrated a revision's copied dir to an archive source") {
		t.Fatal("no migration logged")
	}
}

type tarEntry struct {
	h    tar.Header
	body string
}

func tarGz(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := e.h
		h.Size = int64(len(e.body))
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := errors.Join(tw.Close(), zw.Close()); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func reg(name, body string, mode int64) tarEntry {
	return tarEntry{h: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode}, body: body}
}

// TestAppUploadHostile: archives built to escape are refused with a clear
// error, at upload or, for what only unpacking reveals (a write through a
// symlink out of the tree), at deploy; nothing lands outside; an upload
// over --max-upload gets 413 (streamed or announced), and a digest that
// does not match the bytes is refused.
func TestAppUploadHostile(t *testing.T) {
	b := startBerth(t, "", "--max-upload", "1Mi")
	outside := t.TempDir()
	for _, tc := range []struct {
		name    string
		entries []tarEntry
		want    string
	}{
		{"dotdot", []tarEntry{reg("../../../../../.."+outside+"/escaped", "x", 0)}, "leaves the archive's root"},
		{"absolute", []tarEntry{reg(outside+"/escaped", "x", 0)}, "absolute name"},
		{"hard link outside", []tarEntry{{h: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../../../etc/passwd"}}}, "outside the archive"},
		{"device", []tarEntry{{h: tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}}}, "device node"},
		{"setuid", []tarEntry{reg("su", "#!/bin/sh\n", 0o4755)}, "setuid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := b.adminCall(http.MethodPost, "/v1/sources", "application/gzip", bytes.NewReader(tarGz(t, tc.entries...)))
			if status != http.StatusBadRequest || !strings.Contains(body, "InvalidArchive") || !strings.Contains(body, tc.want) {
				t.Fatalf("upload: HTTP %d %s, want 400 with %q", status, body, tc.want)
			}
		})
	}

	t.Run("symlink escape then write through it", func(t *testing.T) {
		data := tarGz(t, tarEntry{h: tar.Header{Name: "out", Typeflag: tar.TypeSymlink, Linkname: outside}}, reg("out/escaped", "x", 0))
		status, body := b.adminCall(http.MethodPost, "/v1/sources", "application/gzip", bytes.NewReader(data))
		if status != http.StatusCreated {
			t.Fatalf("upload: HTTP %d %s (its headers alone are fine)", status, body)
		}
		var info struct{ Digest string }
		_ = json.Unmarshal([]byte(body), &info)
		status, body = b.adminCall(http.MethodPost, "/v1/apps/evil/revisions", "application/json",
			strings.NewReader(`{"command":"sleep 600","source":{"archive":"`+info.Digest+`"}}`))
		if status != http.StatusBadRequest || !strings.Contains(body, `entry \"out/escaped\"`) || !strings.Contains(body, "escapes") {
			t.Fatalf("deploy: HTTP %d %s, want 400 naming out/escaped", status, body)
		}
		if _, _, code := b.try("app", "show", "evil"); code == 0 {
			t.Fatal("the failed deploy left an app")
		}
	})
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("files landed outside: %v", entries)
	}

	// Too large: announced (Content-Length) and streamed (chunked).
	big := make([]byte, 2<<20)
	_, _ = rand.Read(big)
	status, body := b.adminCall(http.MethodPost, "/v1/sources", "application/gzip", bytes.NewReader(big))
	if status != http.StatusRequestEntityTooLarge || !strings.Contains(body, "--max-upload") {
		t.Fatalf("2 MiB upload with Content-Length: HTTP %d %s, want 413", status, body)
	}
	status, body = b.adminCall(http.MethodPost, "/v1/sources", "application/gzip", io.MultiReader(bytes.NewReader(big)))
	if status != http.StatusRequestEntityTooLarge || !strings.Contains(body, "--max-upload") {
		t.Fatalf("2 MiB chunked upload: HTTP %d %s, want 413", status, body)
	}
	// And through the CLI, with incompressible files.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "random.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := b.try("app", "deploy", "huge", "--dir", dir, "--command", "sleep 600")
	if code == 0 || !strings.Contains(errOut, "--max-upload") {
		t.Fatalf("CLI deploy of a too-large dir: exit %d: %s", code, errOut)
	}

	// A digest the bytes do not have.
	small := tarGz(t, reg("a", "a", 0))
	sum := sha256.Sum256([]byte("something else"))
	status, body = b.adminCall(http.MethodPost, "/v1/sources?digest=sha256:"+hex.EncodeToString(sum[:]), "application/gzip", bytes.NewReader(small))
	if status != http.StatusBadRequest || !strings.Contains(body, "DigestMismatch") {
		t.Fatalf("wrong digest: HTTP %d %s", status, body)
	}
}
