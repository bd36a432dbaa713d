package e2e

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	cdruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/berth-dev/berth/internal/imagetest"
	"github.com/berth-dev/berth/internal/registrytest"
	"github.com/berth-dev/berth/internal/testutil"
)

// browser starts headless Chromium (Debian's, from scripts/setup.sh
// --test) and returns a tab's context; *.test names map to 127.0.0.1.
func browser(t *testing.T, timeout time.Duration) context.Context {
	t.Helper()
	const chromium = "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		t.Skip("chromium is not installed (scripts/setup.sh --test installs it)")
	}
	// Not t.TempDir: Chromium's helpers may still write there as it exits.
	profile, err := os.MkdirTemp("", "berth-ui-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(profile) })
	opts := append(chromedp.DefaultExecAllocatorOptions[:0:0],
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(profile),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("host-resolver-rules", "MAP *.test 127.0.0.1"),
		chromedp.Flag("enable-precise-memory-info", true),
		chromedp.WindowSize(1280, 800),
	)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(cancelBrowser)
	// Confirmation dialogs (rotate the key, end a session) are accepted.
	chromedp.ListenTarget(bctx, func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			go func() { _ = chromedp.Run(bctx, page.HandleJavaScriptDialog(true)) }()
		}
	})
	if err := chromedp.Run(bctx); err != nil {
		t.Fatal(err)
	}
	return bctx
}

// artifacts is where the test's screenshots go: $BERTH_ARTIFACTS or
// $TMPDIR/berth-artifacts.
func artifacts(t *testing.T) string {
	dir := os.Getenv("BERTH_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "berth-artifacts")
	}
	dir = filepath.Join(dir, "dashboard")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// screenshots saves the current page at desktop (1280×800) and phone
// (390×844) widths, whole pages, and checks the page does not scroll
// sideways on the phone.
func screenshots(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := artifacts(t)
	for _, v := range []struct {
		suffix string
		w, h   int64
		opts   []chromedp.EmulateViewportOption
	}{
		{"desktop", 1280, 800, nil},
		{"phone", 390, 844, []chromedp.EmulateViewportOption{chromedp.EmulateScale(2), chromedp.EmulateMobile, chromedp.EmulateTouch}},
	} {
		var png []byte
		var overflow bool
		err := chromedp.Run(ctx, chromedp.EmulateViewport(v.w, v.h, v.opts...), chromedp.Sleep(150*time.Millisecond),
			chromedp.Evaluate(`document.documentElement.scrollWidth > document.documentElement.clientWidth + 1`, &overflow),
			chromedp.FullScreenshot(&png, 100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if overflow {
			t.Errorf("%s at %s width scrolls sideways", name, v.suffix)
		}
		if err := os.WriteFile(filepath.Join(dir, name+"-"+v.suffix+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := chromedp.Run(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatal(err)
	}
}

// run runs actions in the tab, within a minute.
func run(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	var s string
	run(t, ctx, "read "+sel, chromedp.Text(sel, &s, chromedp.ByQuery))
	return s
}

func location(t *testing.T, ctx context.Context) string {
	t.Helper()
	var u string
	run(t, ctx, "location", chromedp.Location(&u))
	return u
}

// signIn signs in at the dashboard's login page.
func signIn(t *testing.T, ctx context.Context, ui, token string) {
	t.Helper()
	run(t, ctx, "sign in", chromedp.Navigate(ui+"/ui/"), chromedp.WaitVisible("#token", chromedp.ByQuery),
		chromedp.SendKeys("#token", token, chromedp.ByQuery), chromedp.Submit("#login", chromedp.ByQuery),
		chromedp.WaitVisible("#pools", chromedp.ByQuery))
}

// TestDashboardInBrowser drives the dashboard in headless Chromium: a wrong
// token is refused and the right one signs in; the overview lists apps and
// pools; a traffic split changed in the editor is what the gateway then
// follows; an app's logs stream into the page while it is called, and a
// chatty app's log view stays bounded; Python runs in a pool session from
// the console; a key rotated from the pool page is refused by the data
// plane; a cross-site form post is refused. Screenshots of every page, at
// desktop and phone widths, go to $BERTH_ARTIFACTS/dashboard.
func TestDashboardInBrowser(t *testing.T) {
	ctx := browser(t, 6*time.Minute)
	dir := everythingServer(t)
	tasksDir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(tasksDir, "tasks"), "./examples/tasks")
	build.Dir = testutil.ModuleRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build examples/tasks: %v\n%s", err, out)
	}
	reg := registrytest.Start(t, registrytest.Options{})
	imgDigest := imagetest.Push(t, reg.Ref("mcp/everything:ui"), everythingImage(t))
	b := startBerth(t, "", "--insecure-registry", reg.Host)
	ui := b.info.AdminURL
	token, err := os.ReadFile(filepath.Join(b.dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	b.cli("app", "deploy", "split", "--dir", dir, "--command", everythingCommand, "--min", "1", "--revision-suffix", "blue")
	b.cli("app", "deploy", "split", "--dir", dir, "--command", everythingCommand, "--min", "1", "--revision-suffix", "green")
	b.cli("app", "traffic", "split", "--set", "split--blue=100", "--label", "split--green=canary")
	b.cli("app", "deploy", "tasks", "--dir", tasksDir, "--command", "./tasks --db /data/tasks.db --log-level debug",
		"--volume", "data:/data", "--min", "1", "--probe", "http:/healthz")
	// A chatty app: 4,000 log lines a second next to its MCP server.
	b.cli("app", "deploy", "chatty", "--dir", dir, "--min", "1", "--command",
		`(n=0; while :; do n=$((n+1)); seq -f "chatty $n.%g" 1 200; sleep 0.05; done) & exec `+everythingCommand)
	key := b.createPool("code", "--type", "python", "--memory", "128Mi")
	b.waitReplicas("split", 2)
	b.waitReplicas("tasks", 1)
	b.waitReplicas("chatty", 1)

	t.Run("wrong token refused", func(t *testing.T) {
		run(t, ctx, "login page", chromedp.Navigate(ui+"/ui/"), chromedp.WaitVisible("#token", chromedp.ByQuery))
		if u := location(t, ctx); !strings.Contains(u, "/ui/login") {
			t.Fatalf("signed out, /ui/ went to %s", u)
		}
		screenshots(t, ctx, "login")
		run(t, ctx, "wrong token", chromedp.SendKeys("#token", "berth_admin_0000wrong", chromedp.ByQuery),
			chromedp.Submit("#login", chromedp.ByQuery), chromedp.WaitVisible(".alert.error", chromedp.ByQuery))
		if got := text(t, ctx, ".alert.error"); !strings.Contains(got, "refused") {
			t.Fatalf("wrong token: %q", got)
		}
		var cookies []*network.Cookie
		run(t, ctx, "cookies", chromedp.ActionFunc(func(ctx context.Context) (err error) {
			cookies, err = network.GetCookies().WithURLs([]string{ui + "/ui/"}).Do(ctx)
			return err
		}))
		if len(cookies) != 0 {
			t.Fatalf("a wrong token got a cookie: %+v", cookies[0])
		}
		res, err := http.PostForm(ui+"/ui/login", url.Values{"token": {"berth_admin_0000wrong"}})
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusUnauthorized || len(res.Cookies()) != 0 {
			t.Fatalf("POST /ui/login with a wrong token: %d %v", res.StatusCode, res.Cookies())
		}
	})

	signIn(t, ctx, ui, strings.TrimSpace(string(token)))
	t.Run("overview", func(t *testing.T) {
		apps, pools := text(t, ctx, "#apps"), text(t, ctx, "#pools")
		for _, want := range []string{"split", "tasks", "chatty"} {
			if !strings.Contains(apps, want) {
				t.Errorf("overview apps lack %s: %s", want, apps)
			}
		}
		if !strings.Contains(pools, "code") || !strings.Contains(pools, "default") {
			t.Errorf("overview pools: %s", pools)
		}
		if ev := text(t, ctx, "#events"); !strings.Contains(ev, "deploy") || !strings.Contains(ev, "traffic") {
			t.Errorf("overview events lack the deploys and the traffic change: %s", ev)
		}
		var cookies []*network.Cookie
		run(t, ctx, "cookies", chromedp.ActionFunc(func(ctx context.Context) (err error) {
			cookies, err = network.GetCookies().WithURLs([]string{ui + "/ui/"}).Do(ctx)
			return err
		}))
		if len(cookies) != 1 || !cookies[0].HTTPOnly || cookies[0].SameSite != network.CookieSameSiteStrict {
			t.Fatalf("session cookie: %+v", cookies)
		}
		screenshots(t, ctx, "overview")
	})

	t.Run("traffic split", func(t *testing.T) {
		appURL := b.info.PublicURL + "/apps/split/mcp"
		count := func(n int) map[string]int {
			c := map[string]int{}
			for range n {
				_, rev := initialize(t, appURL)
				c[rev]++
			}
			return c
		}
		if c := count(20); c["split--blue"] != 20 {
			t.Fatalf("before the change: %v", c)
		}
		setSplit := func(blue, green string) {
			t.Helper()
			run(t, ctx, "set split", chromedp.Navigate(ui+"/ui/apps/split"), chromedp.WaitVisible("#traffic", chromedp.ByQuery),
				chromedp.Evaluate(fmt.Sprintf(`(() => {
					const set = (n, v) => { const el = document.querySelector('input[name="pct:' + n + '"]'); el.value = v; el.dispatchEvent(new Event("input", {bubbles: true})); };
					set("split--blue", %q); set("split--green", %q); })()`, blue, green), nil))
		}
		// Not 100: the editor will not save, and the server refuses it.
		setSplit("60", "60")
		var disabled bool
		run(t, ctx, "save disabled", chromedp.Evaluate(`document.getElementById("save-traffic").disabled`, &disabled))
		if !disabled || text(t, ctx, "#traffic-sum") != "120" {
			t.Fatalf("a 120%% split can be saved (disabled=%v, sum %s)", disabled, text(t, ctx, "#traffic-sum"))
		}
		run(t, ctx, "force submit", chromedp.Evaluate(`document.getElementById("traffic").submit()`, nil),
			chromedp.WaitVisible("#traffic-error", chromedp.ByQuery))
		if got := text(t, ctx, "#traffic-error"); !strings.Contains(got, "add up to 120") {
			t.Fatalf("server-side check: %q", got)
		}
		if v := b.appShow("split"); len(v.Traffic) != 1 || v.Traffic[0].Revision != "split--blue" {
			t.Fatalf("a refused split changed the traffic: %+v", v.Traffic)
		}
		// All to green, then half and half: the gateway follows.
		setSplit("0", "100")
		run(t, ctx, "save", saveTraffic())
		if c := count(30); c["split--green"] != 30 {
			t.Fatalf("after setting green=100 in the dashboard: %v", c)
		}
		setSplit("50", "50")
		run(t, ctx, "save", saveTraffic())
		c := count(200)
		t.Logf("200 new sessions after a 50/50 split in the dashboard: %v", c)
		if c["split--blue"] < 65 || c["split--green"] < 65 {
			t.Fatalf("50/50 landed as %v", c)
		}
		if v := b.appShow("split"); len(v.Traffic) != 2 {
			t.Fatalf("CLI sees traffic %+v", v.Traffic)
		}
		run(t, ctx, "reload", chromedp.Navigate(ui+"/ui/apps/split"), chromedp.WaitVisible("#tools", chromedp.ByQuery))
		if m := text(t, ctx, "#methods"); !strings.Contains(m, "initialize") {
			t.Errorf("the app page's latency table lacks initialize: %s", m)
		}
		if r := text(t, ctx, "#replicas"); !strings.Contains(r, "ready") || !strings.Contains(r, "MiB") {
			t.Errorf("the replicas table lacks phase or memory: %s", r)
		}
		screenshots(t, ctx, "app")
	})

	t.Run("deploy archive", func(t *testing.T) {
		tgz := filepath.Join(t.TempDir(), "app.tgz")
		writeTarGz(t, tgz, dir)
		run(t, ctx, "deploy", chromedp.Navigate(ui+"/ui/apps/split"), chromedp.WaitReady("#deploy-form", chromedp.ByQuery),
			chromedp.Evaluate(`document.getElementById("deploy").open = true`, nil),
			chromedp.SetUploadFiles(`#deploy-form input[type=file]`, []string{tgz}, chromedp.ByQuery),
			chromedp.SetValue(`#deploy-form input[name=revisionSuffix]`, "ui", chromedp.ByQuery),
			chromedp.Submit("#deploy-form", chromedp.ByQuery), chromedp.WaitVisible(".alert.ok", chromedp.ByQuery))
		if got := text(t, ctx, ".alert.ok"); !strings.Contains(got, "split--ui") {
			t.Fatalf("after the deploy: %q", got)
		}
		v := b.appShow("split")
		if last := v.Revisions[len(v.Revisions)-1]; last.Name != "split--ui" || last.Config.Source == nil || last.Config.Command != everythingCommand {
			t.Fatalf("deployed revision: %+v", last)
		}
		// Send it all the traffic from the editor: the gateway answers from it.
		run(t, ctx, "traffic to ui", chromedp.Evaluate(`(() => {
			for (const el of document.querySelectorAll("input.pct")) { el.value = el.name === "pct:split--ui" ? "100" : "0"; el.dispatchEvent(new Event("input", {bubbles: true})); } })()`, nil),
			saveTraffic())
		for i := range 5 {
			if _, rev := initialize(t, b.info.PublicURL+"/apps/split/mcp"); rev != "split--ui" {
				t.Fatalf("request %d after the dashboard's deploy went to %s", i, rev)
			}
		}
	})

	t.Run("deploy image", func(t *testing.T) {
		awaitPromise := func(p *cdruntime.EvaluateParams) *cdruntime.EvaluateParams { return p.WithAwaitPromise(true) }
		run(t, ctx, "app page", chromedp.Navigate(ui+"/ui/apps/split"), chromedp.WaitReady("#image-form", chromedp.ByQuery))
		// Without the form's CSRF token, the dashboard refuses the deploy.
		var status int
		run(t, ctx, "no csrf", chromedp.Evaluate(fmt.Sprintf(`fetch("/ui/apps/split/deploy-image", {method: "POST", body: new URLSearchParams({image: %q}),
			headers: {"Accept": "application/x-ndjson"}}).then(r => r.status)`, reg.Ref("mcp/everything:ui")), &status, awaitPromise))
		if status != http.StatusForbidden {
			t.Fatalf("an image deploy without the CSRF token: HTTP %d", status)
		}
		deploy := func(ref, suffix string) {
			t.Helper()
			run(t, ctx, "deploy "+ref, chromedp.Navigate(ui+"/ui/apps/split"), chromedp.WaitReady("#image-form", chromedp.ByQuery),
				// Every status a layer's row shows, as the stream draws it.
				chromedp.Evaluate(`window.seen = new Set(); new MutationObserver(() => {
					for (const r of document.querySelectorAll("#pull-progress tbody tr")) window.seen.add(r.dataset.status); })
					.observe(document.getElementById("pull-progress"), {subtree: true, childList: true, attributes: true, characterData: true})`, nil),
				chromedp.Evaluate(`document.getElementById("deploy-image").open = true`, nil),
				chromedp.SetValue(`#image-form input[name=image]`, ref, chromedp.ByQuery),
				chromedp.SetValue(`#image-form input[name=revisionSuffix]`, suffix, chromedp.ByQuery),
				chromedp.Click("#deploy-image-button", chromedp.ByQuery),
				chromedp.Poll(`!document.getElementById("pull-result").hidden || !document.getElementById("pull-error").hidden`, nil, chromedp.WithPollingTimeout(50*time.Second)))
		}
		deploy(reg.Ref("mcp/nothing:1"), "none")
		if got := text(t, ctx, "#pull-error"); !strings.Contains(got, "mcp/nothing:1") {
			t.Fatalf("deploy of a missing image: %q", got)
		}
		deploy(reg.Ref("mcp/everything:ui"), "img")
		var seen []string
		run(t, ctx, "progress", chromedp.Evaluate(`[...window.seen].filter(Boolean).sort()`, &seen))
		t.Logf("layer statuses the page showed: %v; result: %q", seen, text(t, ctx, "#pull-result"))
		if !slices.Contains(seen, "downloading") || !slices.Contains(seen, "unpacked") {
			t.Fatalf("the page showed layer statuses %v: want downloading, then unpacked", seen)
		}
		if got := text(t, ctx, "#pull-result"); !strings.Contains(got, "split--img") || !strings.Contains(got, imgDigest.String()) {
			t.Fatalf("after the image deploy: %q", got)
		}
		screenshots(t, ctx, "app-deploy-image")
		v := b.appShow("split")
		last := v.Revisions[len(v.Revisions)-1]
		if last.Name != "split--img" || last.Config.Source == nil || last.Config.Source.Image != reg.Ref("mcp/everything")+"@"+imgDigest.String() || last.Config.Port != 8080 {
			t.Fatalf("deployed revision: %+v", last)
		}
		run(t, ctx, "traffic to img", chromedp.Navigate(ui+"/ui/apps/split"), chromedp.WaitVisible("#traffic", chromedp.ByQuery),
			chromedp.Evaluate(`(() => {
			for (const el of document.querySelectorAll("input.pct")) { el.value = el.name === "pct:split--img" ? "100" : "0"; el.dispatchEvent(new Event("input", {bubbles: true})); } })()`, nil),
			saveTraffic())
		if got := text(t, ctx, "#traffic"); !strings.Contains(got, "image "+reg.Ref("mcp/everything")) {
			t.Errorf("the revisions table does not say what split--img runs: %s", got)
		}
		for i := range 5 {
			if _, rev := initialize(t, b.info.PublicURL+"/apps/split/mcp"); rev != "split--img" {
				t.Fatalf("request %d after the dashboard's image deploy went to %s", i, rev)
			}
		}
	})

	t.Run("logs stream", func(t *testing.T) {
		run(t, ctx, "app page", chromedp.Navigate(ui+"/ui/apps/tasks"),
			chromedp.Poll(`document.getElementById("log-status").textContent === "live"`, nil, chromedp.WithPollingTimeout(20*time.Second)))
		var before string
		run(t, ctx, "logs", chromedp.Text("#logs", &before, chromedp.ByQuery))
		if strings.Contains(before, "createTask") {
			t.Fatal("createTask in the logs before it was called")
		}
		cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: b.info.PublicURL + "/apps/tasks/mcp"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close()
		for i := range 3 {
			if r, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "createTask", Arguments: map[string]any{"title": "task " + strconv.Itoa(i)}}); err != nil || r.IsError {
				t.Fatalf("createTask: %v %+v", err, r)
			}
		}
		// Streamed: the page is not reloaded.
		run(t, ctx, "streamed line", chromedp.Poll(`document.getElementById("logs").textContent.includes("tool=createTask")`, nil, chromedp.WithPollingTimeout(20*time.Second)))
		// Search hides the lines that do not match.
		var visible, total int
		run(t, ctx, "search", chromedp.SendKeys("#log-search", "createTask", chromedp.ByQuery),
			chromedp.Evaluate(`[...document.querySelectorAll("#logs .line")].filter(l => !l.hidden).length`, &visible),
			chromedp.Evaluate(`document.querySelectorAll("#logs .line").length`, &total))
		if visible < 3 || visible >= total {
			t.Fatalf("search: %d of %d lines visible", visible, total)
		}
		screenshots(t, ctx, "app-logs")
	})

	t.Run("chatty logs stay bounded", func(t *testing.T) {
		run(t, ctx, "chatty page", chromedp.Navigate(ui+"/ui/apps/chatty"),
			chromedp.Poll(`document.getElementById("log-status").textContent === "live"`, nil, chromedp.WithPollingTimeout(20*time.Second)))
		type sample struct {
			Lines int     `json:"lines"`
			Heap  float64 `json:"heap"`
			Last  string  `json:"last"`
		}
		measure := func() sample {
			var s sample
			run(t, ctx, "measure", chromedp.Evaluate(`({lines: document.querySelectorAll("#logs .line").length,
				heap: performance.memory ? performance.memory.usedJSHeapSize : 0,
				last: (document.querySelector("#logs .line:last-child") || {textContent: ""}).textContent})`, &s))
			return s
		}
		run(t, ctx, "wait", chromedp.Sleep(3*time.Second))
		first := measure()
		run(t, ctx, "wait", chromedp.Sleep(12*time.Second))
		second := measure()
		t.Logf("chatty app's log view: after 3 s %d lines, heap %.1f MB; after 15 s %d lines, heap %.1f MB (last %q)",
			first.Lines, first.Heap/1e6, second.Lines, second.Heap/1e6, second.Last)
		if second.Lines > 1000 || first.Lines > 1000 {
			t.Fatalf("the log view holds %d lines (> 1000)", second.Lines)
		}
		if first.Last == second.Last || !strings.Contains(second.Last, "chatty") {
			t.Fatalf("the chatty app's logs did not stream: %q then %q", first.Last, second.Last)
		}
		if second.Heap > 3*max(first.Heap, 10e6) {
			t.Fatalf("the page's heap grew from %.1f MB to %.1f MB", first.Heap/1e6, second.Heap/1e6)
		}
	})

	t.Run("console runs python", func(t *testing.T) {
		run(t, ctx, "pool page", chromedp.Navigate(ui+"/ui/pools/code"), chromedp.WaitVisible("#console-form", chromedp.ByQuery),
			chromedp.SetValue("#identifier", "ui-console-1", chromedp.ByQuery),
			chromedp.SetValue("#code", "import sys\nprint(6 * 7)\nprint('to stderr', file=sys.stderr)\nopen('answer.txt', 'w').write('forty-two')", chromedp.ByQuery),
			chromedp.Click("#run", chromedp.ByQuery), chromedp.WaitVisible("#exec-status", chromedp.ByQuery))
		if got := text(t, ctx, "#stdout"); strings.TrimSpace(got) != "42" {
			t.Fatalf("stdout %q", got)
		}
		if got := text(t, ctx, "#stderr"); !strings.Contains(got, "to stderr") {
			t.Fatalf("stderr %q", got)
		}
		// The session is listed with its memory; its file downloads.
		if got := text(t, ctx, "#sessions"); !strings.Contains(got, "ui-console-1") || !strings.Contains(got, "MiB") {
			t.Fatalf("sessions table: %s", got)
		}
		var body string
		run(t, ctx, "download", chromedp.Evaluate(`fetch(document.querySelector(".files a").href).then(r => r.text())`, &body, func(p *cdruntime.EvaluateParams) *cdruntime.EvaluateParams { return p.WithAwaitPromise(true) }))
		if body != "forty-two" {
			t.Fatalf("downloaded %q", body)
		}
		up := filepath.Join(t.TempDir(), "hello.txt")
		_ = os.WriteFile(up, []byte("uploaded from the browser"), 0o644)
		run(t, ctx, "upload", chromedp.SetUploadFiles(`#upload input[type=file]`, []string{up}, chromedp.ByQuery),
			chromedp.Submit("#upload", chromedp.ByQuery), chromedp.WaitVisible(".alert.ok", chromedp.ByQuery))
		if got := b.execute("code", key, "ui-console-1", "print(open('hello.txt').read())").Stdout; !strings.Contains(got, "uploaded from the browser") {
			t.Fatalf("uploaded file in the session: %q", got)
		}
		screenshots(t, ctx, "pool")
	})

	var newKey string
	t.Run("rotate key", func(t *testing.T) {
		if r := b.executeRaw("code", key, "rot-1", "print(1)"); r.Status != http.StatusOK {
			t.Fatalf("old key before rotation: %d", r.Status)
		}
		run(t, ctx, "rotate", chromedp.Navigate(ui+"/ui/pools/code"), chromedp.WaitVisible("#rotate", chromedp.ByQuery),
			chromedp.Submit("#rotate", chromedp.ByQuery), chromedp.WaitVisible("#new-key", chromedp.ByQuery))
		newKey = strings.TrimSpace(text(t, ctx, "#new-key"))
		if newKey == "" || newKey == key {
			t.Fatalf("new key %q", newKey)
		}
		if r := b.executeRaw("code", key, "rot-1", "print(1)"); r.Status != http.StatusUnauthorized {
			t.Fatalf("old key after rotation: HTTP %d %s", r.Status, r.Body)
		}
		if r := b.executeRaw("code", newKey, "rot-1", "print(1)"); r.Status != http.StatusOK {
			t.Fatalf("new key: HTTP %d %s", r.Status, r.Body)
		}
		screenshots(t, ctx, "pool-new-key")
		// Shown once: the page shows no key when loaded again.
		run(t, ctx, "reload", chromedp.Navigate(ui+"/ui/pools/code"), chromedp.WaitVisible("#rotate", chromedp.ByQuery))
		var shown bool
		run(t, ctx, "key gone", chromedp.Evaluate(`!!document.getElementById("new-key")`, &shown))
		if shown {
			t.Fatal("the new key is shown again on reload")
		}
	})

	t.Run("cross-site post refused", func(t *testing.T) {
		if newKey == "" {
			t.Skip("needs the rotated key")
		}
		// A page on another site posts a form to the dashboard.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		evil := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprintf(w, `<!doctype html><form id="f" method="post" action="%s/ui/pools/code/rotate-key"><input name="csrf" value="guess"></form><script>document.getElementById("f").submit()</script>`, ui)
		}))
		evil.Listener.Close()
		evil.Listener = ln
		evil.Start()
		defer evil.Close()
		run(t, ctx, "evil page", chromedp.Navigate("http://evil.test:"+strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)+"/"),
			chromedp.Poll(`location.pathname.startsWith("/ui/")`, nil, chromedp.WithPollingTimeout(10*time.Second)),
			chromedp.WaitReady("body", chromedp.ByQuery))
		if got := text(t, ctx, "body"); !strings.Contains(got, "refused") && !strings.Contains(got, "not signed in") {
			t.Fatalf("cross-site post answered: %s", got)
		}
		b.waitLog("method=POST", "path=/ui/pools/code/rotate-key", "status=403")
		if r := b.executeRaw("code", newKey, "rot-1", "print(1)"); r.Status != http.StatusOK {
			t.Fatalf("the cross-site post rotated the key: HTTP %d", r.Status)
		}
		// The same with the session's own cookie, sent by a client that is
		// not a browser: a foreign Origin, or no CSRF token, is refused.
		var cookies []*network.Cookie
		run(t, ctx, "cookies", chromedp.ActionFunc(func(ctx context.Context) (err error) {
			cookies, err = network.GetCookies().WithURLs([]string{ui + "/ui/"}).Do(ctx)
			return err
		}))
		var csrf string
		run(t, ctx, "csrf", chromedp.Navigate(ui+"/ui/pools/code"), chromedp.AttributeValue(`#settings input[name=csrf]`, "value", &csrf, nil, chromedp.ByQuery))
		post := func(origin, token string) int {
			t.Helper()
			form := url.Values{"readySessions": {"0"}}
			if token != "" {
				form.Set("csrf", token)
			}
			req, _ := http.NewRequest(http.MethodPost, ui+"/ui/pools/code/settings", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.AddCookie(&http.Cookie{Name: cookies[0].Name, Value: cookies[0].Value})
			if origin != "" {
				req.Header.Set("Origin", origin)
			}
			res, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			return res.StatusCode
		}
		if got := post("http://evil.test", csrf); got != http.StatusForbidden {
			t.Errorf("foreign Origin with the right token: %d", got)
		}
		if got := post("", ""); got != http.StatusForbidden {
			t.Errorf("no CSRF token: %d", got)
		}
		if got := post("", "0123"); got != http.StatusForbidden {
			t.Errorf("wrong CSRF token: %d", got)
		}
		if got := post(ui, csrf); got != http.StatusSeeOther {
			t.Errorf("same origin with the token (the control case): %d", got)
		}
	})

	t.Run("sign out", func(t *testing.T) {
		run(t, ctx, "sign out", chromedp.Navigate(ui+"/ui/"), chromedp.WaitVisible(".signout", chromedp.ByQuery),
			chromedp.Submit(".signout", chromedp.ByQuery), chromedp.WaitVisible("#token", chromedp.ByQuery),
			chromedp.Navigate(ui+"/ui/pools/code"), chromedp.WaitVisible("#token", chromedp.ByQuery))
	})
	t.Logf("screenshots in %s", artifacts(t))
}

// writeTarGz packs dir's regular files into a gzipped tar at path.
func writeTarGz(t *testing.T, path, dir string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		hdr, _ := tar.FileInfoHeader(info, "")
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		src, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(tw, src)
		src.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
}

// saveTraffic clicks the traffic editor's save button and waits for the
// page it leads to: a flash left on the page by an earlier form (a deploy,
// an earlier save) must not count as this save's answer. The page is
// marked before the click; the new page has no mark. Evaluations during
// the navigation fail and are tried again.
func saveTraffic() chromedp.Action {
	return chromedp.ActionFunc(func(ctx context.Context) error {
		if err := chromedp.Evaluate(`window.berthBeforeSave = true`, nil).Do(ctx); err != nil {
			return err
		}
		if err := chromedp.Click("#save-traffic", chromedp.ByQuery).Do(ctx); err != nil {
			return err
		}
		for ctx.Err() == nil {
			var done bool
			err := chromedp.Evaluate(`!window.berthBeforeSave && document.readyState === "complete" &&
				[...document.querySelectorAll(".alert.ok")].some(e => e.textContent.includes("Traffic split saved"))`, &done).Do(ctx)
			if err == nil && done {
				return nil
			}
			time.Sleep(50 * time.Millisecond)
		}
		return ctx.Err()
	})
}
