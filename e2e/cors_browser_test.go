package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// corsPage is served from the test's origins: it runs MCP initialize,
// notifications/initialized and tools/call with fetch against an endpoint
// and writes what happened into #result.
const corsPage = `<!doctype html><html><body><pre id="result">running</pre><script>
const q = new URLSearchParams(location.search);
const url = q.get("url"), key = q.get("key"), tool = q.get("tool"), args = JSON.parse(q.get("args"));
async function rpc(body, sid) {
  const h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"};
  if (key) h["x-ms-apikey"] = key;
  if (sid) { h["Mcp-Session-Id"] = sid; h["Mcp-Protocol-Version"] = "2025-06-18"; }
  const r = await fetch(url, {method: "POST", headers: h, body: JSON.stringify(body)});
  const text = await r.text();
  let msg = null;
  for (const line of text.split("\n")) { if (line.startsWith("data:")) msg = JSON.parse(line.slice(5)); }
  if (!msg && text.trim().startsWith("{")) msg = JSON.parse(text);
  return {status: r.status, sid: r.headers.get("Mcp-Session-Id"), msg};
}
(async () => {
  try {
    const init = await rpc({jsonrpc: "2.0", id: 1, method: "initialize", params: {protocolVersion: "2025-06-18", capabilities: {}, clientInfo: {name: "browser", version: "1"}}});
    if (!init.msg || !init.msg.result) throw new Error("initialize: " + init.status + " " + JSON.stringify(init.msg));
    if (!init.sid) throw new Error("no Mcp-Session-Id readable (not exposed?)");
    const n = await rpc({jsonrpc: "2.0", method: "notifications/initialized"}, init.sid);
    if (n.status !== 202 && n.status !== 200) throw new Error("initialized: " + n.status);
    const call = await rpc({jsonrpc: "2.0", id: 2, method: "tools/call", params: {name: tool, arguments: args}}, init.sid);
    if (!call.msg || !call.msg.result) throw new Error("tools/call: " + call.status + " " + JSON.stringify(call.msg));
    document.getElementById("result").textContent = "OK " + JSON.stringify(call.msg.result.content);
  } catch (e) {
    document.getElementById("result").textContent = "ERR " + e.name + ": " + e.message;
  }
})();
</script></body></html>`

// TestCORSInBrowser loads a page in headless Chromium from an allowed
// origin and from one that is not, and calls the MCP endpoints of an HTTP
// app (policy from flags, and from a berth apply manifest), a stdio app and
// a pool with fetch: the allowed origin completes initialize,
// notifications/initialized and tools/call (the pool's key in x-ms-apikey,
// a non-simple header: a preflight first); the other is blocked (TypeError
// in the page, 403 at the server); the preflight is answered by the edge
// as configured.
func TestCORSInBrowser(t *testing.T) {
	const chromium = "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		t.Skip("chromium is not installed (scripts/setup.sh --test installs it)")
	}
	dir := everythingServer(t)
	b := startBerth(t, "")

	// One page server; a.test and b.test (both mapped to 127.0.0.1 in the
	// browser) make two origins.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	page := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte(corsPage))
	}))
	page.Listener.Close()
	page.Listener = ln
	page.Start()
	defer page.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	originA, originB := "http://a.test:"+port, "http://b.test:"+port

	b.cli("app", "deploy", "web", "--dir", dir, "--command", everythingCommand, "--min", "1",
		"--cors-allowed-origins", originA+",https://*.example.com", "--cors-max-age", "600")
	b.cli("app", "deploy", "sio", "--dir", dir, "--command", "./everything-server", "--transport", "stdio", "--min", "1",
		"--cors-allowed-origins", originA)
	key := b.createPool("code", "--mcp", "--ready", "1",
		"--cors-allowed-origins", originA, "--cors-allowed-methods", "POST,GET,DELETE",
		"--cors-max-age", "1200", "--cors-expose-headers", "X-Berth-Test")
	// The same policy from a Container Apps manifest (ingress.corsPolicy).
	manifest := filepath.Join(t.TempDir(), "app.yaml")
	y := fmt.Sprintf(`name: declared
properties:
  configuration:
    ingress:
      targetPort: 9090
      corsPolicy: {allowedOrigins: [%q], allowedMethods: [GET, POST, DELETE], maxAge: 300}
  template:
    containers:
      - command: ["./everything-server", "-http", "127.0.0.1:$PORT", "-stateless=false"]
        dir: %s
    scale: {minReplicas: 0, maxReplicas: 1}
`, originA, dir)
	if err := os.WriteFile(manifest, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	b.cli("apply", "-f", manifest)
	if out := b.cli("apply", "-f", manifest); !strings.Contains(out, "no new revision") {
		t.Fatalf("applying the same corsPolicy again made a revision:\n%s", out)
	}
	if v := b.appShow("declared"); v.CORS == nil || v.CORS.MaxAge != 300 || v.CORS.AllowedOrigins[0] != originA {
		t.Fatalf("app show declared: corsPolicy %+v", v.CORS)
	}
	b.waitReplicas("web", 1)
	b.waitReplicas("sio", 1)
	for _, show := range [][]string{{"app", "show", "web"}, {"pool", "show", "code"}} {
		if out := b.cli(show...); !strings.Contains(out, "CORS:") || !strings.Contains(out, originA) {
			t.Fatalf("%v does not list the CORS policy:\n%s", show, out)
		}
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:0:0],
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("host-resolver-rules", "MAP *.test 127.0.0.1"),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()

	// Preflights the browser sent, and the edge's answers, by request id.
	var mu sync.Mutex
	preflights := map[network.RequestID]string{}
	answers := map[string]network.Headers{}
	chromedp.ListenTarget(bctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *network.EventRequestWillBeSent:
			if e.Type == network.ResourceTypePreflight || e.Request.Method == http.MethodOptions {
				preflights[e.RequestID] = e.Request.URL
			}
		case *network.EventResponseReceived:
			if u, ok := preflights[e.RequestID]; ok {
				answers[u] = e.Response.Headers
				answers[u+" status"] = network.Headers{"status": e.Response.Status}
			}
		}
	})
	if err := chromedp.Run(bctx, network.Enable()); err != nil {
		t.Fatal(err)
	}

	appURL := b.info.PublicURL + "/apps/web/mcp"
	poolURL := b.info.PublicURL + "/pools/code/mcp"
	run := func(origin, endpoint, key, tool, args string) string {
		t.Helper()
		u := origin + "/?url=" + urlQuery(endpoint) + "&key=" + urlQuery(key) + "&tool=" + urlQuery(tool) + "&args=" + urlQuery(args)
		var res string
		err := chromedp.Run(bctx, chromedp.Navigate(u),
			chromedp.Poll(`document.getElementById("result").textContent !== "running"`, nil, chromedp.WithPollingTimeout(30*time.Second)),
			chromedp.Text("#result", &res, chromedp.ByQuery))
		if err != nil {
			t.Fatalf("%s → %s: %v", origin, endpoint, err)
		}
		return res
	}
	const appTool, appArgs = "test_simple_text", `{}`
	const poolTool, poolArgs = "launchShell", `{}`

	if got := run(originA, appURL, "", appTool, appArgs); !strings.HasPrefix(got, "OK ") {
		t.Errorf("app from the allowed origin: %s", got)
	}
	if got := run(originA, poolURL, key, poolTool, poolArgs); !strings.HasPrefix(got, "OK ") || !strings.Contains(got, "environmentId") {
		t.Errorf("pool from the allowed origin: %s", got)
	}
	// The preflight of the pool's call from A, as the browser saw it.
	mu.Lock()
	h, ok := answers[poolURL]
	st := answers[poolURL+" status"]
	mu.Unlock()
	declaredURL := b.info.PublicURL + "/apps/declared/mcp"
	if got := run(originA, declaredURL, "", appTool, appArgs); !strings.HasPrefix(got, "OK ") {
		t.Errorf("applied app from the allowed origin: %s", got)
	}
	if got := run(originB, declaredURL, "", appTool, appArgs); !strings.Contains(got, "TypeError") {
		t.Errorf("applied app from a refused origin: %s", got)
	}
	// A stdio app: the apps' domain rule would refuse a.test; its policy
	// allows it.
	stdioURL := b.info.PublicURL + "/apps/sio/mcp"
	if got := run(originA, stdioURL, "", appTool, appArgs); !strings.HasPrefix(got, "OK ") {
		t.Errorf("stdio app from the allowed origin: %s", got)
	}
	if got := run(originB, stdioURL, "", appTool, appArgs); !strings.Contains(got, "TypeError") {
		t.Errorf("stdio app from a refused origin: %s", got)
	}
	if got := run(originB, appURL, "", appTool, appArgs); !strings.Contains(got, "TypeError") {
		t.Errorf("app from a refused origin: %s", got)
	}
	if got := run(originB, poolURL, key, poolTool, poolArgs); !strings.Contains(got, "TypeError") {
		t.Errorf("pool from a refused origin: %s", got)
	}

	if !ok {
		t.Fatalf("the browser sent no preflight to %s (saw %v)", poolURL, answers)
	}
	want := map[string]string{
		"Access-Control-Allow-Origin":  originA,
		"Access-Control-Allow-Methods": "POST, GET, DELETE",
		"Access-Control-Max-Age":       "1200",
	}
	for k, v := range want {
		if got := header(h, k); got != v {
			t.Errorf("preflight %s = %q, want %q (status %v, headers %v)", k, got, v, st, h)
		}
	}
	if got := strings.ToLower(header(h, "Access-Control-Allow-Headers")); !strings.Contains(got, "x-ms-apikey") || !strings.Contains(got, "mcp-session-id") {
		t.Errorf("preflight Access-Control-Allow-Headers = %q", got)
	}
	if got := header(h, "Access-Control-Allow-Credentials"); got != "" {
		t.Errorf("Allow-Credentials sent though not configured: %q", got)
	}
	// The server refused B's preflights with 403 (the edge's access
	// lines), and refuses its actual requests too.
	for _, path := range []string{"/apps/web/mcp", "/apps/declared/mcp", "/apps/sio/mcp", "/pools/code/mcp"} {
		refused := `method=OPTIONS path=` + path + ` .*status=403`
		for deadline := time.Now().Add(5 * time.Second); !regexpFind(b.logs.String(), refused); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("no preflight to %s refused with 403 in the server log", path)
				break
			}
		}
		req, _ := http.NewRequest(http.MethodPost, b.info.PublicURL+path, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		req.Header.Set("Origin", originB)
		req.Header.Set("Content-Type", "text/plain")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusForbidden || res.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("POST %s from %s: %d %v, want 403 without CORS headers", path, originB, res.StatusCode, res.Header)
		}
	}
}

func regexpFind(s, expr string) bool { return regexp.MustCompile(expr).MatchString(s) }

func urlQuery(s string) string { return url.QueryEscape(s) }

func header(h network.Headers, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return fmt.Sprint(v)
		}
	}
	return ""
}
