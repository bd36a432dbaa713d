package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"

	"github.com/berth-dev/berth/controlplane"
)

var runtimes = []string{"bwrap", "gvisor"}

func TestDefaultPoolAndCLI(t *testing.T) {
	b := startBerth(t, "")

	var pools []controlplane.PoolView
	b.cliJSON(&pools, "pool", "list")
	if len(pools) != 1 || pools[0].Name != "default" || pools[0].Type != "shell" || !pools[0].MCP {
		t.Fatalf("first start should create the default shell pool with MCP: %+v", pools)
	}

	key := b.createPool("py", "--type", "python", "--ready", "1", "--max", "5", "--cooldown", "120s",
		"--memory", "256Mi", "--cpu", "0.5", "--timeout", "30s")
	var show controlplane.PoolView
	b.cliJSON(&show, "pool", "show", "py")
	want := controlplane.Endpoints{
		Pool:        b.info.PublicURL + "/pools/py",
		CodeExecute: b.info.PublicURL + "/pools/py/code/execute",
		Files:       b.info.PublicURL + "/pools/py/files",
		Sessions:    b.info.PublicURL + "/pools/py/sessions",
	}
	if show.Endpoints != want || show.Type != "python" || show.Max != 5 || show.CooldownSeconds != 120 ||
		show.MemoryBytes != 256<<20 || show.CPU != 0.5 || show.TimeoutSeconds != 30 || show.Egress != "disabled" {
		t.Fatalf("pool show: %+v", show)
	}
	var cred struct{ APIKey string }
	b.cliJSON(&cred, "pool", "credentials", "py")
	if cred.APIKey != key {
		t.Fatalf("credentials returned %q, created with %q", cred.APIKey, key)
	}
	if got := strings.TrimSpace(b.cli("pool", "credentials", "py")); got != key {
		t.Fatalf("text credentials %q", got)
	}
	if out := b.cli("pool", "list"); !strings.Contains(out, "py") || !strings.Contains(out, "python") {
		t.Fatalf("pool list text:\n%s", out)
	}

	// Mistakes get clear messages and distinct exit codes.
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"pool", "show", "nope"}, 1, `pool not found: "nope"`},
		{[]string{"pool", "create", "py"}, 1, "already exists"},
		{[]string{"pool", "create", "Bad_Name"}, 1, "not a valid pool name"},
		{[]string{"pool", "create", "x", "--type", "ruby"}, 1, "type must be"},
		{[]string{"pool", "create", "x", "--memory", "lots"}, 2, "not a size"},
		{[]string{"pool", "create", "x", "--runtime", "qemu"}, 1, "not available"},
		{[]string{"pool", "show"}, 2, "one pool name"},
		{[]string{"pool", "list", "--bogus"}, 2, "flag provided but not defined"},
		{[]string{"frobnicate"}, 2, "unknown command"},
	} {
		_, errOut, code := b.try(tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.msg) {
			t.Errorf("berth %s: exit %d, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), code, errOut, tc.code, tc.msg)
		}
	}

	// update changes settings; rotate-key invalidates the old key at once.
	var upd controlplane.PoolView
	b.cliJSON(&upd, "pool", "update", "py", "--max", "7", "--mcp=true")
	if upd.Max != 7 || !upd.MCP || upd.Endpoints.MCP != b.info.PublicURL+"/pools/py/mcp" || upd.CooldownSeconds != 120 {
		t.Fatalf("update: %+v", upd)
	}
	if r := b.executeRaw("py", key, "before-rotate", "1+1"); r.Status != 200 {
		t.Fatalf("execute with key: %d %s", r.Status, r.Body)
	}
	var rot struct{ APIKey string }
	b.cliJSON(&rot, "pool", "rotate-key", "py")
	if r := b.executeRaw("py", key, "before-rotate", "1+1"); r.Status != http.StatusUnauthorized || !strings.Contains(string(r.Body), "rotated") {
		t.Fatalf("old key after rotation: %d %s", r.Status, r.Body)
	}
	if r := b.executeRaw("py", rot.APIKey, "before-rotate", "1+1"); r.Status != 200 {
		t.Fatalf("new key: %d %s", r.Status, r.Body)
	}

	b.cli("pool", "delete", "py")
	if _, errOut, code := b.try("pool", "show", "py"); code == 0 || !strings.Contains(errOut, "not found") {
		t.Fatalf("deleted pool still shown: %s", errOut)
	}
	if r := b.executeRaw("py", rot.APIKey, "after-delete", "1"); r.Status != http.StatusNotFound {
		t.Fatalf("execute on deleted pool: %d", r.Status)
	}
}

func TestExecuteAndFiles(t *testing.T) {
	b := startBerth(t, "")
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			shKey := b.createPool("sh-"+rt, "--runtime", rt, "--ready", "1")
			pyKey := b.createPool("py-"+rt, "--runtime", rt, "--type", "python", "--ready", "1")
			sh, py := "sh-"+rt, "py-"+rt

			// Shell: exit code, stderr, state across calls.
			r := b.execute(sh, shKey, "sess-1", "cd /tmp && export GREETING=hi; echo out; echo err >&2; exit_code() { return 3; }; exit_code")
			if r.Status != "Failure" || r.Stdout != "out\n" || r.Stderr != "err\n" || r.ExitCode == nil || *r.ExitCode != 3 {
				t.Fatalf("shell result: %+v", r)
			}
			r = b.execute(sh, shKey, "sess-1", `echo "$PWD $GREETING"`)
			if r.Status != "Success" || r.Stdout != "/tmp hi\n" || *r.ExitCode != 0 {
				t.Fatalf("shell state: %+v", r)
			}
			if r := b.execute(sh, shKey, "sess-2", `echo "$PWD [$GREETING]"`); r.Stdout != "/mnt/data []\n" {
				t.Fatalf("other session sees state: %+v", r)
			}

			// Python: result of the trailing expression, state, errors.
			r = b.execute(py, pyKey, "nb-1", "import json\ndata = {'a': [1, 2]}\nprint('side effect')\ndata")
			if r.Status != "Success" || r.Stdout != "side effect\n" || string(r.Result) != `{"a":[1,2]}` || r.ExitCode != nil {
				t.Fatalf("python result: %+v (result %s)", r, r.Result)
			}
			if r := b.execute(py, pyKey, "nb-1", "data['a'][1] * 21"); string(r.Result) != "42" {
				t.Fatalf("python state: %+v", r)
			}
			var repr string
			if r := b.execute(py, pyKey, "nb-1", "object()"); json.Unmarshal(r.Result, &repr) != nil || !strings.HasPrefix(repr, "<object object at") {
				t.Fatalf("non-JSON result should be its repr: %s", r.Result)
			}
			r = b.execute(py, pyKey, "nb-1", "raise ValueError('bad input')")
			if r.Status != "Failure" || !strings.Contains(r.Stderr, "ValueError: bad input") || r.Error == nil {
				t.Fatalf("python exception: %+v", r)
			}
			if r := b.execute(py, pyKey, "nb-2", "'data' in globals()"); string(r.Result) != "false" {
				t.Fatalf("python state leaked across identifiers: %s", r.Result)
			}

			// Files: upload, list, download, delete.
			content := make([]byte, 300<<10)
			_, _ = rand.Read(content)
			up := b.upload(sh, shKey, "files-1", "blob.bin", bytes.NewReader(content))
			if up.Status != 200 {
				t.Fatalf("upload: %d %s", up.Status, up.Body)
			}
			var list struct {
				Value []struct {
					Properties struct {
						Filename string
						Size     int64
					}
				}
			}
			lr := b.do("GET", "/pools/"+sh+"/files?identifier=files-1", keyHeader(shKey), nil)
			if err := json.Unmarshal(lr.Body, &list); err != nil || lr.Status != 200 {
				t.Fatalf("list: %d %s", lr.Status, lr.Body)
			}
			if len(list.Value) != 1 || list.Value[0].Properties.Filename != "blob.bin" || list.Value[0].Properties.Size != int64(len(content)) {
				t.Fatalf("list: %s", lr.Body)
			}
			// The session's code sees the upload, and files it writes can be downloaded.
			if r := b.execute(sh, shKey, "files-1", "sha256sum blob.bin | cut -c1-16; echo made > made.txt"); r.Status != "Success" {
				t.Fatalf("use upload: %+v", r)
			}
			dl := b.do("GET", "/pools/"+sh+"/files/content/blob.bin?identifier=files-1", keyHeader(shKey), nil)
			if dl.Status != 200 || !bytes.Equal(dl.Body, content) {
				t.Fatalf("download: %d, %d bytes", dl.Status, len(dl.Body))
			}
			if dl := b.do("GET", "/pools/"+sh+"/files/content/made.txt?identifier=files-1", keyHeader(shKey), nil); string(dl.Body) != "made\n" {
				t.Fatalf("download of a file the session wrote: %d %q", dl.Status, dl.Body)
			}
			if d := b.do("DELETE", "/pools/"+sh+"/files/blob.bin?identifier=files-1", keyHeader(shKey), nil); d.Status != 204 {
				t.Fatalf("delete: %d %s", d.Status, d.Body)
			}
			if dl := b.do("GET", "/pools/"+sh+"/files/content/blob.bin?identifier=files-1", keyHeader(shKey), nil); dl.Status != 404 || dl.errorCode() != "FileNotFound" {
				t.Fatalf("download after delete: %d %s", dl.Status, dl.Body)
			}
			// Other sessions do not see the files.
			if dl := b.do("GET", "/pools/"+sh+"/files/content/made.txt?identifier=files-2", keyHeader(shKey), nil); dl.Status != 404 {
				t.Fatalf("another session downloaded the file: %d", dl.Status)
			}

			// Sessions API.
			sl := b.do("GET", "/pools/"+sh+"/sessions", keyHeader(shKey), nil)
			for _, id := range []string{"sess-1", "sess-2", "files-1", "files-2"} {
				if !strings.Contains(string(sl.Body), `"identifier":"`+id+`"`) {
					t.Fatalf("sessions list lacks %s: %s", id, sl.Body)
				}
			}
			if d := b.do("DELETE", "/pools/"+sh+"/sessions/sess-1", keyHeader(shKey), nil); d.Status != 204 {
				t.Fatalf("delete session: %d %s", d.Status, d.Body)
			}
			if r := b.execute(sh, shKey, "sess-1", `echo "[$GREETING]"`); r.Stdout != "[]\n" {
				t.Fatalf("deleted session kept state: %+v", r)
			}
			if d := b.do("DELETE", "/pools/"+sh+"/sessions/never-was", keyHeader(shKey), nil); d.Status != 404 {
				t.Fatalf("delete unknown session: %d", d.Status)
			}
		})
	}
}

func (b *berth) upload(poolName, key, id, name string, content io.Reader) resp {
	b.t.Helper()
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		part, err := mw.CreateFormFile("file", name)
		if err == nil {
			_, err = io.Copy(part, content)
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	h := keyHeader(key)
	h.Set("Content-Type", mw.FormDataContentType())
	return b.do("POST", fmt.Sprintf("/pools/%s/files/upload?identifier=%s", poolName, id), h, pr)
}

func TestBadRequests(t *testing.T) {
	b := startBerth(t, "")
	key := b.createPool("strict", "--ready", "0", "--max", "2")
	exec := func(body string) string {
		return string(must(json.Marshal(map[string]any{"properties": map[string]any{"code": body}})))
	}
	big := strings.Repeat("x", 5<<20)
	for _, tc := range []struct {
		name, method, path string
		header             http.Header
		body               string
		status             int
		code               string
	}{
		{"no key", "POST", "/pools/strict/code/execute?identifier=abcd", http.Header{}, exec("true"), 401, "Unauthorized"},
		{"wrong key", "POST", "/pools/strict/code/execute?identifier=abcd", keyHeader("nope"), exec("true"), 401, "Unauthorized"},
		{"bearer works", "POST", "/pools/strict/code/execute?identifier=abcd", http.Header{"Authorization": {"Bearer " + key}}, exec("true"), 200, ""},
		{"unknown pool", "POST", "/pools/missing/code/execute?identifier=abcd", keyHeader(key), exec("true"), 404, "PoolNotFound"},
		{"malformed json", "POST", "/pools/strict/code/execute?identifier=abcd", keyHeader(key), `{"properties": {"code": "echo`, 400, "MalformedJSON"},
		{"wrong json type", "POST", "/pools/strict/code/execute?identifier=abcd", keyHeader(key), `{"properties": {"code": 7}}`, 400, "MalformedJSON"},
		{"no body", "POST", "/pools/strict/code/execute?identifier=abcd", keyHeader(key), ``, 400, "MissingBody"},
		{"no code", "POST", "/pools/strict/code/execute?identifier=abcd", keyHeader(key), `{"properties": {}}`, 400, "MissingCode"},
		{"async", "POST", "/pools/strict/code/execute?identifier=abcd", keyHeader(key), `{"properties": {"code": "true", "executionType": "asynchronous"}}`, 400, "UnsupportedExecutionType"},
		{"oversized body", "POST", "/pools/strict/code/execute?identifier=abcd", keyHeader(key), exec(big), 413, "PayloadTooLarge"},
		{"no identifier", "POST", "/pools/strict/code/execute", keyHeader(key), exec("true"), 400, "MissingIdentifier"},
		{"short identifier", "POST", "/pools/strict/code/execute?identifier=abc", keyHeader(key), exec("true"), 400, "InvalidIdentifier"},
		{"bad identifier chars", "POST", "/pools/strict/code/execute?identifier=a%20b%C3%A9c%0Ad", keyHeader(key), exec("true"), 400, "InvalidIdentifier"},
		{"traversal download", "GET", "/pools/strict/files/content/..%2F..%2Fetc%2Fpasswd?identifier=abcd", keyHeader(key), "", 400, "InvalidFileName"},
		{"traversal via path", "GET", "/pools/strict/files/content/passwd?identifier=abcd&path=../../etc", keyHeader(key), "", 400, "InvalidFileName"},
		{"traversal delete", "DELETE", "/pools/strict/files/..%2Fx?identifier=abcd", keyHeader(key), "", 400, "InvalidFileName"},
		{"traversal list", "GET", "/pools/strict/files?identifier=abcd&path=..", keyHeader(key), "", 400, "InvalidPath"},
		{"not multipart", "POST", "/pools/strict/files/upload?identifier=abcd", keyHeader(key), "hello", 400, "NotMultipart"},
		{"second session", "POST", "/pools/strict/code/execute?identifier=efgh", keyHeader(key), exec("true"), 200, ""},
		{"over max sessions", "POST", "/pools/strict/code/execute?identifier=ijkl", keyHeader(key), exec("true"), 429, "SessionLimitReached"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := b.do(tc.method, tc.path, tc.header, strings.NewReader(tc.body))
			if r.Status != tc.status || r.errorCode() != tc.code {
				t.Fatalf("HTTP %d %s; want %d %s", r.Status, r.Body, tc.status, tc.code)
			}
			if tc.status >= 400 {
				var e struct{ Error struct{ Message string } }
				if json.Unmarshal(r.Body, &e) != nil || len(e.Error.Message) < 10 || strings.Contains(e.Error.Message, "goroutine") {
					t.Fatalf("error body is not a helpful JSON message: %s", r.Body)
				}
				if got := r.Header.Get("x-ms-error-code"); got != tc.code {
					t.Fatalf("x-ms-error-code %q, want %q", got, tc.code)
				}
			}
		})
	}

	// Upload names that escape the workspace, and an upload over 128 MiB.
	if r := b.upload("strict", key, "abcd", "../escape.txt", strings.NewReader("x")); r.Status != 400 {
		t.Fatalf("upload ../: %d %s", r.Status, r.Body)
	}
	if r := b.upload("strict", key, "abcd", "/etc/evil", strings.NewReader("x")); r.Status != 400 {
		t.Fatalf("upload absolute: %d %s", r.Status, r.Body)
	}
	r := b.upload("strict", key, "abcd", "huge.bin", io.LimitReader(zeros{}, 128<<20+1))
	if r.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("129 MiB upload: %d %s", r.Status, r.Body)
	}
	if l := b.do("GET", "/pools/strict/files?identifier=abcd", keyHeader(key), nil); strings.Contains(string(l.Body), "huge") || strings.Contains(string(l.Body), "upload") {
		t.Fatalf("a refused upload left a file behind: %s", l.Body)
	}
	// Exactly 128 MiB is accepted.
	if r := b.upload("strict", key, "abcd", "max.bin", io.LimitReader(zeros{}, 128<<20)); r.Status != 200 {
		t.Fatalf("128 MiB upload: %d %s", r.Status, r.Body)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
