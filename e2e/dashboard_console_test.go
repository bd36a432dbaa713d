package e2e

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// TestDashboardConsoleStreams: the pool console shows a command's output
// as it comes (the page's script reads the data plane's NDJSON through the
// dashboard): "one" is on the page while the command sleeps and "two" is
// not yet; then the status, stderr (styled apart) and the refreshed
// sessions table. Without script the form still runs the code and shows
// its output when it ends.
func TestDashboardConsoleStreams(t *testing.T) {
	ctx := browser(t, 3*time.Minute)
	b := startBerth(t, "")
	ui := b.info.AdminURL
	token, err := os.ReadFile(filepath.Join(b.dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	key := b.createPool("hstream", "--ready", "1", "--memory", "128Mi")
	signIn(t, ctx, ui, strings.TrimSpace(string(token)))

	// Through the public front door, as the README's curl does: the first
	// line comes while the command sleeps.
	req, _ := http.NewRequest(http.MethodPost, b.info.PublicURL+"/pools/hstream/code/execute?identifier=curl-1",
		strings.NewReader(`{"properties":{"code":"echo one; sleep 2; echo two"}}`))
	req.Header = keyHeader(key)
	req.Header.Set("Accept", "application/x-ndjson")
	start := time.Now()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(res.Body)
	first, err := br.ReadString('\n')
	firstAt := time.Since(start)
	rest, _ := io.ReadAll(br)
	res.Body.Close()
	if err != nil || first != "{\"stdout\":\"one\\n\"}\n" || time.Since(start)-firstAt < time.Second ||
		!strings.Contains(string(rest), `"stdout":"one\ntwo\n"`) {
		t.Fatalf("through the front door: first line %q after %v (%v), then after %v: %s", first, firstAt, err, time.Since(start), rest)
	}
	t.Logf("front door: first line after %v, answer after %v", firstAt.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	run(t, ctx, "run", chromedp.Navigate(ui+"/ui/pools/hstream"), chromedp.WaitVisible("#console-form", chromedp.ByQuery),
		chromedp.SetValue("#identifier", "ui-stream-1", chromedp.ByQuery),
		chromedp.SetValue("#code", "echo one; echo oops >&2; sleep 3; echo two", chromedp.ByQuery),
		chromedp.Click("#run", chromedp.ByQuery))
	var seen struct {
		Out  string `json:"out"`
		Done bool   `json:"done"`
	}
	start = time.Now()
	for {
		run(t, ctx, "read the console", chromedp.Evaluate(`({out: (document.getElementById("stdout") || {}).textContent || "",
			done: !!document.getElementById("exec-status")})`, &seen))
		if strings.Contains(seen.Out, "one") {
			break
		}
		if seen.Done || time.Since(start) > 30*time.Second {
			t.Fatalf("the console showed no output before the command ended (stdout %q, ended %v)", seen.Out, seen.Done)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("\"one\" on the page %v after Run", time.Since(start).Round(time.Millisecond))
	if seen.Done || strings.Contains(seen.Out, "two") {
		t.Fatalf("\"one\" was shown only with the rest: stdout %q, ended %v", seen.Out, seen.Done)
	}
	run(t, ctx, "wait for the end", chromedp.WaitVisible("#exec-status", chromedp.ByQuery))
	if got := text(t, ctx, "#stdout"); got != "one\ntwo\n" && got != "one\ntwo" {
		t.Fatalf("stdout %q", got)
	}
	var stderrClass string
	run(t, ctx, "stderr", chromedp.Evaluate(`document.getElementById("stderr").className + ":" + document.getElementById("stderr").textContent`, &stderrClass))
	if stderrClass != "stderr:oops\n" {
		t.Fatalf("stderr element %q", stderrClass)
	}
	if got := text(t, ctx, "#exec-status"); got != "Success" {
		t.Fatalf("status %q", got)
	}
	if got := text(t, ctx, "#sessions"); !strings.Contains(got, "ui-stream-1") {
		t.Fatalf("the sessions table was not refreshed: %s", got)
	}
	if got := text(t, ctx, "#live-count"); got != "2" { // curl-1 and ui-stream-1
		t.Fatalf("live sessions %q after the run, want 2", got)
	}
	screenshots(t, ctx, "pool-console-stream")

	// Without script: the form posts and the page shows the output when
	// the command has ended.
	run(t, ctx, "no script", emulation.SetScriptExecutionDisabled(true), chromedp.Navigate(ui+"/ui/pools/hstream"),
		chromedp.WaitVisible("#console-form", chromedp.ByQuery),
		chromedp.SendKeys("#code", "echo one; sleep 1; echo two", chromedp.ByQuery),
		chromedp.Click("#run", chromedp.ByQuery), chromedp.WaitVisible("#exec-status", chromedp.ByQuery))
	if u := location(t, ctx); !strings.HasSuffix(u, "/ui/pools/hstream/console#console") {
		t.Fatalf("without script, the form went to %s", u)
	}
	if got := text(t, ctx, "#stdout"); strings.TrimSpace(got) != "one\ntwo" {
		t.Fatalf("stdout without script %q", got)
	}
}
