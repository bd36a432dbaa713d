package e2e

// Azure's dynamic-sessions client libraries against Berth, unchanged but
// for the endpoint and the credential. No client can be installed here
// (PyPI is unreachable, @langchain/azure-dynamic-sessions is not on npm),
// so each subtest replays the HTTP requests the client's source builds —
// URL joining and escaping, headers, body formatting, multipart framing —
// and reads the responses the way that source does. Each names the
// source it was written from (repository, file, commit).

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// azClient sends a client's requests as it builds them.
type azClient struct {
	t        *testing.T
	endpoint string // the pool management endpoint, as a user configures it
	key      string
}

func (c azClient) send(method, rawURL string, header map[string]string, body []byte) resp {
	c.t.Helper()
	req, err := http.NewRequest(method, rawURL, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if body == nil {
		req.Body = nil
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	client := &http.Client{Timeout: 2 * time.Minute}
	r, err := client.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	defer r.Body.Close()
	data, _ := io.ReadAll(r.Body)
	return resp{Status: r.StatusCode, Body: data, Header: r.Header}
}

// ok is the client's raise_for_status (or IsSuccessStatusCode check).
func (c azClient) ok(r resp, what string) resp {
	c.t.Helper()
	if r.Status < 200 || r.Status > 299 {
		c.t.Fatalf("%s: HTTP %d: %s", what, r.Status, r.Body)
	}
	return r
}

// dig walks decoded JSON by keys and indexes, as a client's
// response["a"][0]["b"] does; a missing step is an empty object (the test
// then fails on the value, instead of panicking).
func dig(v any, path ...any) map[string]any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			if l := list(v); k < len(l) {
				v = l[k]
			} else {
				v = nil
			}
		}
	}
	m, _ := v.(map[string]any)
	return m
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

func jsonOf(t *testing.T, r resp) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("not JSON: %v: %s", err, r.Body)
	}
	return m
}

// pyQuote is Python's urllib.parse.quote(s, safe="/").
func pyQuote(s string) string { return percentEncode(s, "_.-~/") }

// jsEncodeURIComponent is JavaScript's encodeURIComponent.
func jsEncodeURIComponent(s string) string { return percentEncode(s, "-_.!~*'()") }

// dotnetEscapeDataString is .NET's Uri.EscapeDataString (RFC 3986 unreserved).
func dotnetEscapeDataString(s string) string { return percentEncode(s, "-_.~") }

func percentEncode(s, safe string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(safe, c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// pyJSONString is a string as Python's json.dumps writes it (ensure_ascii).
func pyJSONString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r < 0x20 || r > 0x7e:
			if r > 0xffff {
				r -= 0x10000
				fmt.Fprintf(&b, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
			} else {
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func uuid4() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// pyMultipart is the body urllib3 (requests' files=) and httpx build for
// one file field: a 32-hex-digit boundary, a quoted filename, the given
// part Content-Type.
func pyMultipart(filename string, data []byte) (body []byte, boundary string) {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	boundary = hex.EncodeToString(b)
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\nContent-Type: application/octet-stream\r\n\r\n", boundary, filename)
	buf.Write(data)
	fmt.Fprintf(&buf, "\r\n--%s--\r\n", boundary)
	return buf.Bytes(), boundary
}

// azurePools starts one server with a shell and a Python pool for the
// client replays.
func azurePools(t *testing.T) (b *berth, sh, py azClient) {
	b = startBerth(t, "")
	shKey := b.createPool("azsh", "--ready", "1")
	pyKey := b.createPool("azpy", "--type", "python", "--ready", "1")
	return b, azClient{endpoint: b.info.PublicURL + "/pools/azsh", key: shKey},
		azClient{endpoint: b.info.PublicURL + "/pools/azpy", key: pyKey}
}

func TestAzureClients(t *testing.T) {
	_, sh, py := azurePools(t)
	for _, tc := range []struct {
		name string
		pool azClient
		run  func(t *testing.T, c azClient)
	}{
		{"LangChainPython/SessionsPythonREPLTool/2024-02-02-preview", py, langchainPythonREPL},
		{"LangChainPython/SessionsBashTool/2025-02-02-preview", sh, langchainBashTool},
		{"LangChainPython/SessionsBashBackend(deepagents)/2025-02-02-preview", sh, deepagentsBashBackend},
		{"LangChainJS/SessionsPythonREPLTool/2024-02-02-preview", py, langchainJSREPL},
		{"LlamaIndex/AzureCodeInterpreterToolSpec/2024-02-02-preview", py, llamaIndexCodeInterpreter},
		{"SemanticKernelPython/SessionsPythonTool/2024-02-02-preview", py, semanticKernelPython},
		{"SemanticKernelDotNet/SessionsPythonPlugin/2024-10-02-preview", py, semanticKernelDotNet},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.pool
			c.t = t
			tc.run(t, c)
		})
	}
}

// langchainPythonREPL replays SessionsPythonREPLTool of
// langchain-ai/langchain-azure libs/azure-dynamic-sessions/
// langchain_azure_dynamic_sessions/tools/sessions.py at 035f7771 (package
// langchain-azure-dynamic-sessions): _build_url appends "/" to the
// endpoint, quote()s the identifier and pins 2024-02-02-preview; close()
// deletes the session at 2025-10-02-preview.
func langchainPythonREPL(t *testing.T, c azClient) {
	sessionID := "user@example.com:chat/" + uuid4()[:8] // Azure's identifier rule allows @ : /
	const ua = "langchain-azure-dynamic-sessions/0.0.0 (Language=Python)"
	buildURL := func(path string) string {
		ep := c.endpoint + "/"
		return ep + path + "?" + "identifier=" + pyQuote(sessionID) + "&api-version=2024-02-02-preview"
	}
	auth := "Bearer " + c.key
	execute := func(code string) map[string]any {
		body := `{"properties": {"codeInputType": "inline", "executionType": "synchronous", "code": ` + pyJSONString(code) + `}}`
		r := c.ok(c.send("POST", buildURL("code/execute"), map[string]string{"Authorization": auth, "Content-Type": "application/json", "User-Agent": ua}, []byte(body)), "execute")
		props := dig(jsonOf(t, r), "properties")
		return props
	}
	if p := execute("x = 6 * 7\nprint(\"héllo <&>\")\nx"); p["result"] != 42.0 || p["stdout"] != "héllo <&>\n" || p["stderr"] != "" {
		t.Fatalf("execute: %v", p)
	}
	if p := execute("x + 1"); p["result"] != 43.0 {
		t.Fatalf("state across executions: %v", p)
	}
	// upload_file(data=BytesIO(...), remote_file_path="data.csv")
	body, boundary := pyMultipart("data.csv", []byte("a,b\n1,2\n"))
	r := c.ok(c.send("POST", buildURL("files/upload"), map[string]string{"Authorization": auth, "User-Agent": ua, "Content-Type": "multipart/form-data; boundary=" + boundary}, body), "upload")
	v := dig(jsonOf(t, r), "value", 0, "properties")
	if v["filename"] != "data.csv" || v["size"] != 8.0 {
		t.Fatalf("upload metadata (RemoteFileMetadata.from_dict): %s", r.Body)
	}
	if p := execute("open('/mnt/data/data.csv').read().splitlines()[1]"); p["result"] != "1,2" {
		t.Fatalf("uploaded file in the session: %v", p)
	}
	execute("import os\nos.makedirs('out', exist_ok=True)\nopen('out/r.txt', 'w').write('report')")
	// download_file(remote_file_path="out/r.txt"): quote() keeps the slash.
	if r := c.ok(c.send("GET", buildURL("files/content/"+pyQuote("out/r.txt")), map[string]string{"Authorization": auth, "User-Agent": ua}, nil), "download"); string(r.Body) != "report" {
		t.Fatalf("download: %q", r.Body)
	}
	// download_file(remote_file_path="/mnt/data/out/r.txt"): the URL has
	// "files/content//mnt/data/…", which the server's path cleaning
	// redirects to "files/content/mnt/data/…"; both name the same file.
	if r := c.ok(c.send("GET", buildURL("files/content/"+pyQuote("/mnt/data/out/r.txt")), map[string]string{"Authorization": auth, "User-Agent": ua}, nil), "download /mnt/data/…"); string(r.Body) != "report" {
		t.Fatalf("download of /mnt/data/out/r.txt: %q", r.Body)
	}
	r = c.ok(c.send("GET", buildURL("files"), map[string]string{"Authorization": auth, "User-Agent": ua}, nil), "list")
	names := []string{}
	for i := range list(jsonOf(t, r)["value"]) {
		names = append(names, fmt.Sprint(dig(jsonOf(t, r), "value", i, "properties")["filename"]))
	}
	if strings.Join(names, ",") != "data.csv,out" {
		t.Fatalf("list_files: %v", names)
	}
	// close() → _delete_session: DELETE ENDPOINT/session?identifier=…&api-version=2025-10-02-preview
	del := c.endpoint + "/" + "session" + "?" + "identifier=" + pyQuote(sessionID) + "&api-version=2025-10-02-preview"
	c.ok(c.send("DELETE", del, map[string]string{"Authorization": "Bearer " + c.key, "User-Agent": ua}, nil), "delete_session")
	if p := execute("'x' in globals()"); p["result"] != false {
		t.Fatalf("session survived delete_session: %v", p)
	}
}

// langchainBashTool replays SessionsBashTool of the same file (035f7771):
// POST ENDPOINT/executions with {"shellCommand": …} at 2025-02-02-preview;
// _run reads result.stdout/stderr and int(status) as the exit code;
// upload_file posts to files…&path=/mnt/data and reads name/sizeInBytes;
// download_file GETs files/{quote(path)}/content; list_files reads
// value[].name/sizeInBytes.
func langchainBashTool(t *testing.T, c azClient) {
	sessionID := uuid4()
	const ua = "langchain-azure-dynamic-sessions/0.0.0 (Language=Python)"
	buildURL := func(path string) string {
		return c.endpoint + "/" + path + "?" + "identifier=" + pyQuote(sessionID) + "&api-version=2025-02-02-preview"
	}
	auth := "Bearer " + c.key
	run := func(cmd string) (stdout, stderr string, exitCode *int) {
		r := c.ok(c.send("POST", buildURL("executions"), map[string]string{"Authorization": auth, "Content-Type": "application/json", "User-Agent": ua},
			[]byte(`{"shellCommand": `+pyJSONString(cmd)+`}`)), "execute")
		m := jsonOf(t, r)
		result := dig(m, "result")
		if s, ok := m["status"].(string); ok {
			if n, err := strconv.Atoi(s); err == nil { // int(status_raw), None on ValueError
				exitCode = &n
			}
		}
		stdout, _ = result["stdout"].(string)
		stderr, _ = result["stderr"].(string)
		return stdout, stderr, exitCode
	}
	if out, errOut, code := run("cd /tmp; export A=1; echo hello; echo oops >&2"); out != "hello\n" || errOut != "oops\n" || code == nil || *code != 0 {
		t.Fatalf("run: %q %q %v", out, errOut, code)
	}
	if out, _, code := run("echo $PWD $A; exit 3"); out != "/tmp 1\n" || code == nil || *code != 3 {
		t.Fatalf("shell state and exit code: %q %v", out, code)
	}
	body, boundary := pyMultipart("notes.txt", []byte("first line\n"))
	r := c.ok(c.send("POST", buildURL("files")+"&path=/mnt/data", map[string]string{"Authorization": auth, "User-Agent": ua, "Content-Type": "multipart/form-data; boundary=" + boundary}, body), "upload")
	m := jsonOf(t, r)
	if m["name"] != "notes.txt" || m["sizeInBytes"] != 11.0 {
		t.Fatalf("upload: %s", r.Body)
	}
	if out, _, _ := run("cat /mnt/data/notes.txt; mkdir -p /mnt/data/sub; echo deep > /mnt/data/sub/d.txt"); out != "first line\n" {
		t.Fatalf("uploaded file: %q", out)
	}
	r = c.ok(c.send("GET", buildURL("files/"+pyQuote("sub/d.txt")+"/content"), map[string]string{"Authorization": auth, "User-Agent": ua}, nil), "download")
	if string(r.Body) != "deep\n" {
		t.Fatalf("download: %q", r.Body)
	}
	// download_file(remote_file_path="/mnt/data/notes.txt") builds
	// "files//mnt/data/notes.txt/content" (quote() keeps the slashes).
	r = c.ok(c.send("GET", buildURL("files/"+pyQuote("/mnt/data/notes.txt")+"/content"), map[string]string{"Authorization": auth, "User-Agent": ua}, nil), "download /mnt/data/…")
	if string(r.Body) != "first line\n" {
		t.Fatalf("download of /mnt/data/notes.txt: %q", r.Body)
	}
	r = c.ok(c.send("GET", buildURL("files"), map[string]string{"Authorization": auth, "User-Agent": ua}, nil), "list")
	got := map[string]float64{}
	for i := range list(jsonOf(t, r)["value"]) {
		e := dig(jsonOf(t, r), "value", i)
		got[fmt.Sprint(e["name"])], _ = e["sizeInBytes"].(float64)
	}
	if got["notes.txt"] != 11 || len(got) != 2 {
		t.Fatalf("list_files: %s", r.Body)
	}
	c.ok(c.send("DELETE", c.endpoint+"/session?identifier="+pyQuote(sessionID)+"&api-version=2025-10-02-preview", map[string]string{"Authorization": auth, "User-Agent": ua}, nil), "delete_session")
}

// deepagentsBashBackend replays SessionsBashBackend of langchain-ai/
// langchain-azure libs/azure-dynamic-sessions/langchain_azure_dynamic_sessions/
// backends/sessions.py at 4a263838: execute() does int(data["status"])
// with no fallback (a status that is not a number breaks every call), and
// its file operations are shell commands; upload_files posts the basename
// to files…&path=/mnt/data, download_files GETs files/{quote(basename)}/content.
func deepagentsBashBackend(t *testing.T, c azClient) {
	sessionID := uuid4()
	buildURL := func(path string) string {
		return c.endpoint + "/" + path + "?" + "identifier=" + pyQuote(sessionID) + "&api-version=2025-02-02-preview"
	}
	headers := map[string]string{"Authorization": "Bearer " + c.key, "User-Agent": "langchain-azure-dynamic-sessions/0.0.0 (Language=Python)"}
	execute := func(command string) (output string, exitCode int) {
		h := map[string]string{"Content-Type": "application/json"}
		for k, v := range headers {
			h[k] = v
		}
		r := c.send("POST", buildURL("executions"), h, []byte(`{"shellCommand": `+pyJSONString(command)+`}`))
		if r.Status < 200 || r.Status > 299 { // "if not response.ok: raise RuntimeError"
			t.Fatalf("Execution request failed (%d): %s", r.Status, r.Body)
		}
		m := jsonOf(t, r)
		result := dig(m, "result")
		raw, ok := m["status"].(string)
		n, err := strconv.Atoi(raw)
		if !ok || err != nil {
			t.Fatalf("int(status) fails on %v: %s", m["status"], r.Body)
		}
		return fmt.Sprint(result["stdout"]) + fmt.Sprint(result["stderr"]), n
	}
	// write(): base64 + shell redirect; read(): awk with line numbers.
	content := "alpha\nbeta\n"
	b64 := base64.StdEncoding.EncodeToString([]byte(content))
	path := "/mnt/data/proj/a.txt"
	if out, code := execute(fmt.Sprintf(`if [ -e %[1]s ]; then echo "Error: File '%[1]s' already exists" >&2; exit 1; fi && mkdir -p $(dirname %[1]s) && echo '%[2]s' | base64 -d > %[1]s`, path, b64)); code != 0 {
		t.Fatalf("write: %d %q", code, out)
	}
	if out, code := execute(`awk 'NR>=1 && NR<=2000 {printf "%6d\t%s\n", NR, $0}' ` + path + ` 2>&1`); code != 0 || out != "     1\talpha\n     2\tbeta\n" {
		t.Fatalf("read: %d %q", code, out)
	}
	if _, code := execute("test -e /mnt/data/nope"); code != 1 {
		t.Fatalf("a failing command's exit code: %d", code)
	}
	// upload_files([("/mnt/data/in/up.bin", bytes)]) sends the basename.
	body, boundary := pyMultipart("up.bin", []byte{0, 1, 2, 255})
	h := map[string]string{"Content-Type": "multipart/form-data; boundary=" + boundary}
	for k, v := range headers {
		h[k] = v
	}
	c.ok(c.send("POST", buildURL("files")+"&path=/mnt/data", h, body), "upload_files")
	if out, _ := execute("od -An -tu1 /mnt/data/up.bin | tr -s ' '"); out != " 0 1 2 255\n" {
		t.Fatalf("uploaded bytes: %q", out)
	}
	r := c.ok(c.send("GET", buildURL("files/"+pyQuote("a.txt")+"/content")+"&path=proj", headers, nil), "download")
	if string(r.Body) != content {
		t.Fatalf("download with path=: %q", r.Body)
	}
	r = c.ok(c.send("GET", buildURL("files/"+pyQuote("up.bin")+"/content"), headers, nil), "download_files")
	if !bytes.Equal(r.Body, []byte{0, 1, 2, 255}) {
		t.Fatalf("download_files: %v", r.Body)
	}
}

// langchainJSREPL replays SessionsPythonREPLTool of langchain-ai/langchainjs
// libs/langchain-azure-dynamic-sessions/src/tools.ts at 0c94c67d
// (@langchain/azure-dynamic-sessions): _buildUrl encodeURIComponent()s the
// identifier at 2024-02-02-preview; the body is JSON.stringify (compact);
// uploadFile sends fetch's FormData (undici's framing) and returns
// value[0].properties; downloadFile puts the name in the path unescaped.
func langchainJSREPL(t *testing.T, c azClient) {
	sessionID := "js-" + uuid4()
	buildURL := func(path string) string {
		u := c.endpoint + "/" + path
		u += "?"
		u += "identifier=" + jsEncodeURIComponent(sessionID)
		u += "&api-version=2024-02-02-preview"
		return u
	}
	auth := "Bearer " + c.key
	body, _ := json.Marshal(map[string]any{"properties": map[string]any{"codeInputType": "inline", "executionType": "synchronous", "code": "sum(range(10))"}})
	r := c.ok(c.send("POST", buildURL("code/execute"), map[string]string{"Content-Type": "application/json", "Authorization": auth}, body), "_call")
	props := dig(jsonOf(t, r), "properties")
	if out := fmt.Sprintf("Result:\n%v\n\nStdout:\n%v\n\nStderr:\n%v", props["result"], props["stdout"], props["stderr"]); out != "Result:\n45\n\nStdout:\n\n\nStderr:\n" {
		t.Fatalf("_call output: %q", out)
	}
	// undici's FormData: boundary "----formdata-undici-0" + 11 digits,
	// filename quoted, a Blob without a type as application/octet-stream.
	boundary := fmt.Sprintf("----formdata-undici-0%011d", time.Now().UnixNano()%1e11)
	var mp bytes.Buffer
	fmt.Fprintf(&mp, "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"hello.py\"\r\nContent-Type: application/octet-stream\r\n\r\nprint('hi')\n\r\n--%s--\r\n", boundary, boundary)
	r = c.ok(c.send("POST", buildURL("files/upload"), map[string]string{"Authorization": auth, "Content-Type": "multipart/form-data; boundary=" + boundary}, mp.Bytes()), "uploadFile")
	f := dig(jsonOf(t, r), "value", 0, "properties")
	if f["filename"] != "hello.py" || f["size"] != 12.0 {
		t.Fatalf("uploadFile: %s", r.Body)
	}
	if r := c.ok(c.send("GET", buildURL("files/content/hello.py"), map[string]string{"Authorization": auth}, nil), "downloadFile"); string(r.Body) != "print('hi')\n" {
		t.Fatalf("downloadFile: %q", r.Body)
	}
	r = c.ok(c.send("GET", buildURL("files"), map[string]string{"authorization": auth}, nil), "listFiles")
	if l := list(jsonOf(t, r)["value"]); len(l) != 1 || dig(jsonOf(t, r), "value", 0, "properties")["filename"] != "hello.py" {
		t.Fatalf("listFiles: %s", r.Body)
	}
}

// llamaIndexCodeInterpreter replays AzureCodeInterpreterToolSpec of
// run-llama/llama_index llama-index-integrations/tools/
// llama-index-tools-azure-code-interpreter/llama_index/tools/
// azure_code_interpreter/base.py at 049040d0: code gets a trailing
// newline; upload_file names the file "/mnt/data/NAME"; downloads strip
// "/mnt/data/" and put the name in the path unescaped.
func llamaIndexCodeInterpreter(t *testing.T, c azClient) {
	sessionID := uuid4()
	buildURL := func(path string) string {
		return c.endpoint + "/" + path + "?" + "identifier=" + pyQuote(sessionID) + "&api-version=2024-02-02-preview"
	}
	auth := "Bearer " + c.key
	code := "import math\nmath.factorial(5)" + "\n"
	body := `{"properties": {"codeInputType": "inline", "executionType": "synchronous", "code": ` + pyJSONString(code) + `}}`
	r := c.ok(c.send("POST", buildURL("code/execute"), map[string]string{"Authorization": auth, "Content-Type": "application/json", "User-Agent": "llamaindex-azure-code-interpreter/0.0.0 (Language=Python)"}, []byte(body)), "code_interpreter")
	if p := dig(jsonOf(t, r), "properties"); p["result"] != 120.0 {
		t.Fatalf("code_interpreter: %s", r.Body)
	}
	mp, boundary := pyMultipart("/mnt/data/input.txt", []byte("42\n"))
	r = c.ok(c.send("POST", buildURL("files/upload"), map[string]string{"Authorization": auth, "Content-Type": "multipart/form-data; boundary=" + boundary}, mp), "upload_file")
	meta := dig(jsonOf(t, r), "value", 0, "properties")
	filename, _ := meta["filename"].(string)
	full := filename
	if !strings.HasPrefix(filename, "/mnt/data") {
		full = "/mnt/data/" + filename
	}
	if full != "/mnt/data/input.txt" || meta["size"] != 3.0 {
		t.Fatalf("upload_file metadata: %s", r.Body)
	}
	body = `{"properties": {"codeInputType": "inline", "executionType": "synchronous", "code": ` + pyJSONString("int(open('/mnt/data/input.txt').read())\n") + `}}`
	r = c.ok(c.send("POST", buildURL("code/execute"), map[string]string{"Authorization": auth, "Content-Type": "application/json"}, []byte(body)), "code_interpreter")
	if p := dig(jsonOf(t, r), "properties"); p["result"] != 42.0 {
		t.Fatalf("the upload is at /mnt/data/input.txt: %s", r.Body)
	}
	remote := strings.ReplaceAll("/mnt/data/input.txt", "/mnt/data/", "")
	if r := c.ok(c.send("GET", buildURL("files/content/"+remote), map[string]string{"Authorization": auth}, nil), "download_file_to_local"); string(r.Body) != "42\n" {
		t.Fatalf("download: %q", r.Body)
	}
	r = c.ok(c.send("GET", buildURL("files"), map[string]string{"Authorization": auth}, nil), "list_files")
	if l := list(jsonOf(t, r)["value"]); len(l) != 1 || dig(jsonOf(t, r), "value", 0, "properties")["size"] != 3.0 {
		t.Fatalf("list_files: %s", r.Body)
	}
}

// semanticKernelPython replays SessionsPythonTool of microsoft/
// semantic-kernel python/semantic_kernel/core_plugins/sessions_python_tool/
// sessions_python_plugin.py at f62757a2: the query string is not escaped;
// "code/execute/" loses its slash; the body is the settings' model_dump
// (inline, synchronous, timeoutInSeconds 100); execute_code sets
// Content-Type: application/json on the shared httpx client, so later
// uploads carry it over a multipart body; uploads are named
// "/mnt/data/NAME".
func semanticKernelPython(t *testing.T, c azClient) {
	sessionID := uuid4()
	ua := "semantic-kernel-python/1.0.0 (Language=Python)"
	clientHeaders := map[string]string{} // httpx.AsyncClient.headers, updated in place
	buildURL := func(endpoint string) string {
		base := c.endpoint
		if !strings.HasSuffix(base, "/") {
			base += "/"
		}
		endpoint = strings.TrimSuffix(endpoint, "/")
		return base + endpoint + "?identifier=" + sessionID + "&api-version=2024-02-02-preview"
	}
	clientHeaders["Authorization"] = "Bearer " + c.key
	clientHeaders["Content-Type"] = "application/json"
	clientHeaders["user-agent"] = ua
	body := `{"properties":{"codeInputType":"inline","executionType":"synchronous","code":` + pyJSONString("print('sk')\n2 ** 10") + `,"timeoutInSeconds":100}}`
	r := c.ok(c.send("POST", buildURL("code/execute/"), clientHeaders, []byte(body)), "execute_code")
	res := dig(jsonOf(t, r), "properties")
	if out := fmt.Sprintf("Status:\n%v\nResult:\n%v\nStdout:\n%v\nStderr:\n%v", res["status"], res["result"], res["stdout"], res["stderr"]); out != "Status:\nSuccess\nResult:\n1024\nStdout:\nsk\n\nStderr:\n" {
		t.Fatalf("execute_code: %q", out)
	}
	// upload_file: httpx keeps the client's Content-Type: application/json
	// (headers.setdefault) over its multipart body.
	mp, _ := pyMultipart("/mnt/data/sk.txt", []byte("from sk"))
	r = c.ok(c.send("POST", buildURL("files/upload"), clientHeaders, mp), "upload_file")
	meta := dig(jsonOf(t, r), "value", 0, "properties")
	if meta["filename"] != "sk.txt" || meta["size"] != 7.0 {
		t.Fatalf("upload_file (from_dict filename/size): %s", r.Body)
	}
	r = c.ok(c.send("GET", buildURL("files"), clientHeaders, nil), "list_files")
	if l := list(jsonOf(t, r)["value"]); len(l) != 1 || dig(jsonOf(t, r), "value", 0, "properties")["filename"] != "sk.txt" {
		t.Fatalf("list_files: %s", r.Body)
	}
	if r := c.ok(c.send("GET", buildURL("files/content/sk.txt"), clientHeaders, nil), "download_file"); string(r.Body) != "from sk" {
		t.Fatalf("download_file: %q", r.Body)
	}
}

// semanticKernelDotNet replays SessionsPythonPlugin of microsoft/
// semantic-kernel dotnet/src/Plugins/Plugins.Core/CodeInterpreter/
// SessionsPythonPlugin.cs at 5221d5a6 (with SessionsPythonCodeExecutionProperties.cs
// at 2607b764 and SessionsRemoteFileMetadata.cs): 2024-10-02-preview;
// System.Text.Json writes the enums by member name ("Inline",
// "Synchronous"); ExecuteCodeAsync reads status, result.executionResult,
// result.stdout and result.stderr with GetProperty (absent = exception);
// uploads are MultipartFormDataContent (quoted GUID boundary, unquoted
// name, filename*), answered by one flat SessionsRemoteFileMetadata;
// downloads Uri.EscapeDataString the name.
func semanticKernelDotNet(t *testing.T, c azClient) {
	sessionID := uuid4()
	base := c.endpoint + "/" // GetBaseEndpoint
	send := func(method, path string, contentType string, body []byte) resp {
		u := base + path + "?identifier=" + sessionID + "&api-version=2024-10-02-preview" // new Uri(base, relative)
		h := map[string]string{"User-Agent": "Semantic-Kernel/1.0.0.0 (Language=dotnet)", "Authorization": "Bearer " + c.key}
		if contentType != "" {
			h["Content-Type"] = contentType
		}
		return c.ok(c.send(method, u, h, body), method+" "+path)
	}
	execute := func(code string) string {
		body, _ := json.Marshal(struct {
			CodeInputType    string `json:"codeInputType"`
			ExecutionType    string `json:"executionType"`
			TimeoutInSeconds int    `json:"timeoutInSeconds"`
			Code             string `json:"code"`
		}{"Inline", "Synchronous", 100, code})
		r := send("POST", "executions", "application/json; charset=utf-8", body)
		var doc map[string]json.RawMessage
		if err := json.Unmarshal(r.Body, &doc); err != nil {
			t.Fatal(err)
		}
		var result map[string]json.RawMessage
		_ = json.Unmarshal(doc["result"], &result)
		for _, k := range []string{"executionResult", "stdout", "stderr"} {
			if _, ok := result[k]; !ok {
				t.Fatalf("result.%s is missing (GetProperty throws): %s", k, r.Body)
			}
		}
		// SessionsPythonCodeExecutionResult: executionResult is a string?.
		var typed struct {
			Status string `json:"status"`
			Result struct {
				ExecutionResult *string `json:"executionResult"`
			} `json:"result"`
		}
		if err := json.Unmarshal(r.Body, &typed); err != nil {
			t.Fatalf("SessionsPythonCodeExecutionResult: %v: %s", err, r.Body)
		}
		return fmt.Sprintf("Status:\n%s\nResult:\n%s\nStdout:\n%s\nStderr:\n%s\n", doc["status"], result["executionResult"], result["stdout"], result["stderr"])
	}
	if out := execute("y = 7 * 6\nprint('dotnet')\ny"); out != "Status:\n\"Succeeded\"\nResult:\n\"42\"\nStdout:\n\"dotnet\\n\"\nStderr:\n\"\"\n" {
		t.Fatalf("ExecuteCodeAsync: %q", out)
	}
	if out := execute("raise KeyError('k')"); !strings.HasPrefix(out, "Status:\n\"Failed\"\nResult:\nnull\n") || !strings.Contains(out, "KeyError") {
		t.Fatalf("a failing execution: %q", out)
	}
	boundary := uuid4()
	var mp bytes.Buffer
	fmt.Fprintf(&mp, "--%s\r\nContent-Disposition: form-data; name=file; filename=data.bin; filename*=utf-8''data.bin\r\n\r\n", boundary)
	mp.WriteString("0123456789")
	fmt.Fprintf(&mp, "\r\n--%s--\r\n", boundary)
	r := send("POST", "files", `multipart/form-data; boundary="`+boundary+`"`, mp.Bytes())
	var meta struct {
		Name           string     `json:"name"`
		Size           *int32     `json:"sizeInBytes"`
		LastModifiedAt *time.Time `json:"lastModifiedAt"`
		ContentType    *string    `json:"contentType"`
		Type           string     `json:"type"`
	}
	if err := json.Unmarshal(r.Body, &meta); err != nil || meta.Name != "data.bin" || meta.Size == nil || *meta.Size != 10 || meta.Type != "file" || meta.LastModifiedAt == nil {
		t.Fatalf("UploadFileAsync → SessionsRemoteFileMetadata: %v %s", err, r.Body)
	}
	execute("import os\nos.makedirs('reports', exist_ok=True)\nopen('reports/q1.csv', 'w').write('x,y')")
	if r := send("GET", "files/"+dotnetEscapeDataString("reports/q1.csv")+"/content", "", nil); string(r.Body) != "x,y" {
		t.Fatalf("DownloadFileAsync with %%2F: %q", r.Body)
	}
	if r := send("GET", "files/"+dotnetEscapeDataString("/mnt/data/data.bin")+"/content", "", nil); string(r.Body) != "0123456789" {
		t.Fatalf("DownloadFileAsync of /mnt/data/NAME: %q", r.Body)
	}
	r = send("GET", "files", "", nil)
	var list struct {
		Value []struct {
			Name string `json:"name"`
			Size *int32 `json:"sizeInBytes"`
			Type string `json:"type"`
		} `json:"value"`
	}
	if err := json.Unmarshal(r.Body, &list); err != nil || len(list.Value) != 2 {
		t.Fatalf("ListFilesAsync: %v %s", err, r.Body)
	}
	types := map[string]string{}
	for _, f := range list.Value {
		types[f.Name] = f.Type
	}
	if types["data.bin"] != "file" || types["reports"] != "directory" {
		t.Fatalf("ListFilesAsync entries: %s", r.Body)
	}
}

// TestAzureRESTReference drives the data plane as Microsoft's reference
// for Microsoft.App/DynamicSessions documents it (Azure/azure-rest-api-specs
// specification/app/data-plane/Microsoft.App.DynamicSessions, preview/
// 2024-10-02-preview, 2025-02-02-preview and 2025-10-02-preview
// DynamicSessions.json and examples, at 0bb69d8e), once per version, and
// the 2024-02-02-preview shapes as Azure's older clients send them.
func TestAzureRESTReference(t *testing.T) {
	_, sh, py := azurePools(t)
	for _, v := range []string{"2024-10-02-preview", "2025-02-02-preview", "2025-10-02-preview"} {
		t.Run(v, func(t *testing.T) {
			sh, py := sh, py
			sh.t, py.t = t, t
			restExecutions(t, sh, py, v)
			restFiles(t, py, v)
			restSessions(t, py, v)
		})
	}
	t.Run("2024-02-02-preview", func(t *testing.T) {
		py := py
		py.t = t
		restLegacy(t, py)
	})
}

func refURL(c azClient, path, id, version string, extra ...string) string {
	u := c.endpoint + "/" + path + "?api-version=" + version
	if id != "" {
		u += "&identifier=" + url.QueryEscape(id)
	}
	for _, e := range extra {
		u += "&" + e
	}
	return u
}

func refHeaders(c azClient, h ...string) map[string]string {
	m := map[string]string{"Authorization": "Bearer " + c.key}
	for i := 0; i+1 < len(h); i += 2 {
		m[h[i]] = h[i+1]
	}
	return m
}

// wantError checks Azure's error shape: the status, {"error":{"code",
// "message"}} and the same code in x-ms-error-code.
func wantError(t *testing.T, r resp, status int, code string) {
	t.Helper()
	var e struct {
		Error struct{ Code, Message string }
	}
	_ = json.Unmarshal(r.Body, &e)
	if r.Status != status || e.Error.Code != code || e.Error.Message == "" || r.Header.Get("x-ms-error-code") != code {
		t.Fatalf("want %d %s with x-ms-error-code, got %d %q %s", status, code, r.Status, r.Header.Get("x-ms-error-code"), r.Body)
	}
}

func restExecutions(t *testing.T, sh, py azClient, v string) {
	id := "ref_" + v + ".user@x!+=~"
	// CodeExecution_Execute_Sync.
	body := `{"codeInputType":"Inline","executionType":"Synchronous","code":"print(7*9)","timeoutInSeconds":60}`
	r := py.ok(py.send("POST", refURL(py, "executions", id, v), refHeaders(py, "Content-Type", "application/json"), []byte(body)), "execute")
	var x struct {
		ID, Identifier, ExecutionType, Status string
		Result                                struct {
			Stdout, Stderr  string
			ExecutionResult *string
		}
	}
	if err := json.Unmarshal(r.Body, &x); err != nil || r.Status != 200 || x.ID == "" || x.ID != r.Header.Get("operation-id") ||
		x.Identifier != id || x.ExecutionType != "Synchronous" || x.Status != "Succeeded" || x.Result.Stdout != "63\n" || x.Result.ExecutionResult != nil {
		t.Fatalf("sync execution: %v %d %s", err, r.Status, r.Body)
	}
	if r := py.ok(py.send("GET", r.Header.Get("Operation-Location"), refHeaders(py), nil), "Operation-Location"); !strings.Contains(string(r.Body), `"stdout":"63\n"`) {
		t.Fatalf("GET Operation-Location: %s", r.Body)
	}
	// CodeExecution_Execute_Async_*: 202 Running, then poll.
	poll := func(c azClient, body, opID string) map[string]any {
		t.Helper()
		r := c.send("POST", refURL(c, "executions", id, v), refHeaders(c, "Content-Type", "application/json", "operation-id", opID), []byte(body))
		m := jsonOf(t, r)
		if r.Status != http.StatusAccepted || r.Header.Get("operation-id") != opID || m["id"] != opID || m["status"] != "Running" || m["executionType"] != "Asynchronous" {
			t.Fatalf("async execution: %d %v %s", r.Status, r.Header, r.Body)
		}
		loc := r.Header.Get("Operation-Location")
		if !strings.HasPrefix(loc, "http://") || !strings.Contains(loc, "/executions/"+opID+"?") {
			t.Fatalf("Operation-Location: %q", loc)
		}
		deadline := time.Now().Add(time.Minute)
		for {
			m = jsonOf(t, c.ok(c.send("GET", loc, refHeaders(c), nil), "poll"))
			if m["status"] != "Running" {
				return m
			}
			if time.Now().After(deadline) {
				t.Fatalf("still running: %v", m)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	m := poll(py, `{"codeInputType":"Inline","executionType":"Asynchronous","code":"import time\ntime.sleep(1)\n6*7","timeoutInSeconds":60}`, "op-py-"+v)
	if m["status"] != "Succeeded" || dig(m, "result")["executionResult"] != "42" {
		t.Fatalf("async python result: %v", m)
	}
	// A shell pool's status is the exit code (what the shell clients parse).
	m = poll(sh, `{"shellCommand":"sleep 1; echo done; exit 4","executionType":"Asynchronous"}`, "op-sh-"+v)
	if m["status"] != "4" || dig(m, "result")["stdout"] != "done\n" {
		t.Fatalf("async shell result: %v", m)
	}
	// InlineBase64 code; lowercase enums are accepted too.
	code := base64.StdEncoding.EncodeToString([]byte("echo b64"))
	r = sh.ok(sh.send("POST", refURL(sh, "executions", id, v), refHeaders(sh, "Content-Type", "application/json"),
		[]byte(`{"codeInputType":"InlineBase64","executionType":"synchronous","code":"`+code+`"}`)), "base64")
	if m := jsonOf(t, r); m["status"] != "0" || dig(m, "result")["stdout"] != "b64\n" {
		t.Fatalf("InlineBase64: %s", r.Body)
	}
	wantError(t, py.send("GET", refURL(py, "executions/nope", id, v), refHeaders(py), nil), 404, "ExecutionNotFound")
	wantError(t, py.send("POST", refURL(py, "executions", "", v), refHeaders(py, "Content-Type", "application/json"), []byte(body)), 400, "MissingIdentifier")
	wantError(t, py.send("POST", refURL(py, "executions", "has space", v), refHeaders(py, "Content-Type", "application/json"), []byte(body)), 400, "InvalidIdentifier")
	wantError(t, py.send("POST", refURL(py, "executions", id, v), refHeaders(py, "Content-Type", "application/json"), []byte(`{"codeInputType":"Url","code":"x"}`)), 400, "UnsupportedCodeInputType")
}

func restFiles(t *testing.T, c azClient, v string) {
	id := "files-" + v
	var mp bytes.Buffer
	w := multipart.NewWriter(&mp)
	fw, _ := w.CreateFormFile("file", "testfile.yaml")
	_, _ = fw.Write([]byte("a: 1"))
	_ = w.Close()
	r := c.ok(c.send("POST", refURL(c, "files", id, v, "path=level1"), refHeaders(c, "Content-Type", w.FormDataContentType()), mp.Bytes()), "upload")
	var f ResourceFileJSON
	if err := json.Unmarshal(r.Body, &f); err != nil || f.Name != "testfile.yaml" || f.Type != "file" || f.SizeInBytes != 4 || f.Directory != "level1" || f.ContentType == "" || f.LastModifiedAt.IsZero() {
		t.Fatalf("SessionResourceFiles_Upload: %v %s", err, r.Body)
	}
	// SessionResourceFiles_List_Recursive: flat entries with directory.
	r = c.ok(c.send("GET", refURL(c, "files", id, v, "path=/", "recursive=true"), refHeaders(c), nil), "list")
	var list struct{ Value []ResourceFileJSON }
	_ = json.Unmarshal(r.Body, &list)
	if len(list.Value) != 2 || list.Value[0] != (ResourceFileJSON{Name: "level1", Type: "directory", Directory: "", ContentType: list.Value[0].ContentType, SizeInBytes: list.Value[0].SizeInBytes, LastModifiedAt: list.Value[0].LastModifiedAt}) ||
		list.Value[1].Name != "testfile.yaml" || list.Value[1].Directory != "level1" {
		t.Fatalf("recursive list: %s", r.Body)
	}
	r = c.ok(c.send("GET", refURL(c, "files", id, v), refHeaders(c), nil), "list")
	if !strings.Contains(string(r.Body), `"name":"level1"`) || strings.Contains(string(r.Body), "testfile") {
		t.Fatalf("non-recursive list: %s", r.Body)
	}
	// SessionResourceFiles_Get and _GetContent: path=, %2F and /mnt/data/ name the same file.
	for _, u := range []string{
		refURL(c, "files/testfile.yaml", id, v, "path=level1"),
		refURL(c, "files/level1%2Ftestfile.yaml", id, v),
		refURL(c, "files/%2Fmnt%2Fdata%2Flevel1%2Ftestfile.yaml", id, v),
		refURL(c, "files/testfile.yaml", id, v, "path=/mnt/data/level1"),
	} {
		r = c.ok(c.send("GET", u, refHeaders(c), nil), "get "+u)
		if err := json.Unmarshal(r.Body, &f); err != nil || f.Name != "testfile.yaml" || f.SizeInBytes != 4 {
			t.Fatalf("SessionResourceFiles_Get %s: %s", u, r.Body)
		}
		cu := strings.Replace(u, "?", "/content?", 1)
		if r := c.ok(c.send("GET", cu, refHeaders(c), nil), "content"); string(r.Body) != "a: 1" {
			t.Fatalf("SessionResourceFiles_GetContent %s: %q", cu, r.Body)
		}
	}
	if r := c.send("DELETE", refURL(c, "files/testfile.yaml", id, v, "path=level1"), refHeaders(c), nil); r.Status != 204 {
		t.Fatalf("SessionResourceFiles_Delete: %d %s", r.Status, r.Body)
	}
	wantError(t, c.send("GET", refURL(c, "files/testfile.yaml", id, v, "path=level1"), refHeaders(c), nil), 404, "FileNotFound")
	wantError(t, c.send("GET", refURL(c, "files/..%2F..%2Fetc%2Fpasswd/content", id, v), refHeaders(c), nil), 400, "InvalidFileName")
}

// ResourceFileJSON is SessionResourceFile as a client decodes it.
type ResourceFileJSON struct {
	Name, Type, ContentType, Directory string
	SizeInBytes                        int64
	LastModifiedAt                     time.Time
}

func restSessions(t *testing.T, c azClient, v string) {
	id := "sess:" + v + "/a.b"
	c.ok(c.send("POST", refURL(c, "executions", id, v), refHeaders(c, "Content-Type", "application/json"), []byte(`{"code":"1"}`)), "execute")
	r := c.ok(c.send("GET", refURL(c, "session", id, v), refHeaders(c), nil), "SessionManagement_Get")
	var s struct {
		Identifier, Etag                    string
		CreatedAt, LastAccessedAt, ExpireAt time.Time
	}
	if err := json.Unmarshal(r.Body, &s); err != nil || s.Identifier != id || s.Etag == "" || s.CreatedAt.IsZero() || !s.ExpireAt.After(s.LastAccessedAt) {
		t.Fatalf("SessionManagement_Get: %s", r.Body)
	}
	r = c.ok(c.send("GET", refURL(c, "listSessions", "", v), refHeaders(c), nil), "ListSessions_Get")
	if !strings.Contains(string(r.Body), `"identifier":"`+id+`"`) || !strings.HasPrefix(string(r.Body), `{"sessions":[`) {
		t.Fatalf("ListSessions_Get: %s", r.Body)
	}
	r = c.ok(c.send("GET", refURL(c, "metadata", "", v), refHeaders(c), nil), "SessionPoolMetadata_Get")
	var md struct {
		Runtimes      []struct{ Name string }
		JupyterKernel struct{ Name string }
		CreatedAt     time.Time
	}
	if err := json.Unmarshal(r.Body, &md); err != nil || len(md.Runtimes) != 1 || md.Runtimes[0].Name != "python3" || md.JupyterKernel.Name == "" || md.CreatedAt.IsZero() {
		t.Fatalf("SessionPoolMetadata_Get: %s", r.Body)
	}
	if r := c.send("DELETE", refURL(c, "session", id, v), refHeaders(c), nil); r.Status != 204 {
		t.Fatalf("SessionManagement_Delete: %d %s", r.Status, r.Body)
	}
	wantError(t, c.send("GET", refURL(c, "session", id, v), refHeaders(c), nil), 404, "SessionNotFound")
	wantError(t, c.send("DELETE", refURL(c, "session", id, v), refHeaders(c), nil), 404, "SessionNotFound")
}

// restLegacy: 2024-02-02-preview's {"properties":…} shapes, with the
// capitalized enums older Semantic Kernel .NET sends and Azure's "$id"
// bookkeeping fields, which are ignored.
func restLegacy(t *testing.T, c azClient) {
	const v = "2024-02-02-preview"
	id := "legacy-" + uuid4()
	body := `{"$id":"1","properties":{"$id":"2","codeInputType":"Inline","executionType":"Synchronous","code":"'ok'"}}`
	r := c.ok(c.send("POST", refURL(c, "code/execute", id, v), refHeaders(c, "Content-Type", "application/json"), []byte(body)), "code/execute")
	if p := dig(jsonOf(t, r), "properties"); p["status"] != "Success" || p["result"] != "ok" {
		t.Fatalf("legacy execute: %s", r.Body)
	}
	wantError(t, c.send("POST", refURL(c, "code/execute", id, v), refHeaders(c, "Content-Type", "application/json"),
		[]byte(`{"properties":{"executionType":"Asynchronous","code":"1"}}`)), 400, "UnsupportedExecutionType")
	var mp bytes.Buffer
	w := multipart.NewWriter(&mp)
	fw, _ := w.CreateFormFile("file", "l.txt")
	_, _ = fw.Write([]byte("legacy"))
	_ = w.Close()
	r = c.ok(c.send("POST", refURL(c, "files/upload", id, v), refHeaders(c, "Content-Type", w.FormDataContentType()), mp.Bytes()), "files/upload")
	if p := dig(jsonOf(t, r), "value", 0, "properties"); p["filename"] != "l.txt" || p["size"] != 6.0 || p["lastModifiedTime"] == nil {
		t.Fatalf("legacy upload: %s", r.Body)
	}
	r = c.ok(c.send("GET", refURL(c, "files", id, v), refHeaders(c), nil), "files")
	if !strings.Contains(string(r.Body), `"properties":{"filename":"l.txt","size":6`) {
		t.Fatalf("legacy list: %s", r.Body)
	}
	if r := c.ok(c.send("GET", refURL(c, "files/content/l.txt", id, v), refHeaders(c), nil), "files/content"); string(r.Body) != "legacy" {
		t.Fatalf("legacy download: %q", r.Body)
	}
}

// TestAzureLangChainJSOnNode runs test/interop/azure-sessions-js.mjs: the
// requests of @langchain/azure-dynamic-sessions' SessionsPythonREPLTool
// (tools.ts at 0c94c67d) made by Node 22's own fetch and FormData, so the
// multipart framing is undici's, not a copy of it.
func TestAzureLangChainJSOnNode(t *testing.T) {
	in := needInterop(t)
	_, _, py := azurePools(t)
	out := in.run(t, in.dir, "azure-sessions-js.mjs", py.endpoint, py.key, "js@node:"+uuid4())
	var got struct {
		Call, State, Download string
		Upload                struct {
			Filename string
			Size     int
		}
		List []string
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if got.Call != "Result:\n42\n\nStdout:\njs\n\n\nStderr:\n" || got.Upload.Filename != "greeting.txt" || got.Upload.Size != 15 ||
		got.State != "Result:\nhéllo from js\n\nStdout:\n\n\nStderr:\n" || got.Download != "héllo from js\n" || strings.Join(got.List, ",") != "greeting.txt:15" {
		t.Fatalf("LangChain.js replay: %+v", got)
	}
}
