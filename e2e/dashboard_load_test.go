package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestDashboardLoadTime measures the dashboard's pages with 50 apps (min
// replicas 0, 32Mi: each revision keeps only its spare sandbox) and many
// live sessions in one pool of small sandboxes ($BERTH_UI_SESSIONS, default
// 500, created within 4 minutes; the number reached is logged): the median
// server time of each page over 10 loads, and the browser's
// time to its load event beside a blank page's. It reports; it asserts no
// time (the machines are shared and noisy): the target is 200 ms.
func TestDashboardLoadTime(t *testing.T) {
	if os.Getenv("BERTH_UI_LOAD") == "" {
		t.Skip("a measurement (50 apps, hundreds of sessions; it reports, asserts no time): BERTH_UI_LOAD=1, or make bench")
	}
	ctx := browser(t, 10*time.Minute)
	want := 500
	if v, err := strconv.Atoi(os.Getenv("BERTH_UI_SESSIONS")); err == nil && v > 0 {
		want = v
	}
	b := startBerth(t, "")
	ui := b.info.AdminURL
	appDir := t.TempDir()
	_ = os.WriteFile(filepath.Join(appDir, "server.sh"), []byte("#!/bin/sh\nexec sleep 1000\n"), 0o755)
	for i := range 50 {
		b.cli("app", "deploy", fmt.Sprintf("app-%02d", i), "--dir", appDir, "--command", "./server.sh", "--min", "0", "--memory", "32Mi")
	}
	key := b.createPool("bench", "--memory", "32Mi", "--disk", "16Mi", "--max", strconv.Itoa(want+10), "--ready", "0", "--cooldown", "3600s")

	// Sessions, 4 at a time, until want or the time budget.
	var made, failed atomic.Int64
	deadline := time.Now().Add(4 * time.Minute)
	var wg sync.WaitGroup
	next := atomic.Int64{}
	start := time.Now()
	for range 4 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				i := next.Add(1)
				if i > int64(want) {
					return
				}
				r := b.executeRaw("bench", key, fmt.Sprintf("load-%04d", i), "true")
				if r.Status == http.StatusOK {
					made.Add(1)
				} else if failed.Add(1) == 1 {
					t.Logf("session %d: HTTP %d %s", i, r.Status, r.Body)
				}
			}
		})
	}
	wg.Wait()
	sessions := int(made.Load())
	t.Logf("%d sessions created in %s (%d failed)", sessions, time.Since(start).Round(time.Second), failed.Load())
	if sessions < 50 {
		t.Fatalf("only %d sessions could be created", sessions)
	}

	// The API behind the pool page, whole (what "berth pool sessions" reads).
	t0 := time.Now()
	var all struct {
		Value []json.RawMessage `json:"value"`
	}
	b.cliJSON(&all, "pool", "sessions", "bench")
	t.Logf("berth pool sessions bench -o json: %d sessions in %s (CLI process included)", len(all.Value), time.Since(t0).Round(time.Millisecond))
	if len(all.Value) != sessions {
		t.Errorf("pool sessions lists %d of %d", len(all.Value), sessions)
	}

	// Server time, with a cookie from a real sign-in.
	token, _ := os.ReadFile(filepath.Join(b.dataDir, "admin.token"))
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := hc.PostForm(ui+"/ui/login", url.Values{"token": {strings.TrimSpace(string(token))}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if len(res.Cookies()) != 1 {
		t.Fatalf("sign-in: %d %v", res.StatusCode, res.Cookies())
	}
	cookie := res.Cookies()[0]
	pages := []string{"/ui/", "/ui/pools/bench", "/ui/pools/bench?page=5", "/ui/apps/app-25"}
	for _, p := range pages {
		var times []time.Duration
		size := 0
		for range 10 {
			req, _ := http.NewRequest(http.MethodGet, ui+p, nil)
			req.AddCookie(cookie)
			t0 := time.Now()
			res, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			times = append(times, time.Since(t0))
			size = len(body)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("GET %s: %d", p, res.StatusCode)
			}
		}
		slices.Sort(times)
		med := times[len(times)/2]
		t.Logf("GET %s with 50 apps and %d sessions: median %s, max %s, %d KB", p, sessions, med.Round(10*time.Microsecond), times[len(times)-1].Round(10*time.Microsecond), size/1024)
	}

	// In the browser: to the load event, the median of 5 loads. A blank
	// page from a loopback server is the machine's baseline: on a busy
	// machine (other tests on 2 cores) the browser's own time dominates, and
	// only the dashboard's share over it is held to 200 ms.
	signIn(t, ctx, ui, strings.TrimSpace(string(token)))
	blank := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, "<!doctype html><title>blank</title><p>blank")
	}))
	defer blank.Close()
	type timing struct {
		Response float64 `json:"response"`
		DOM      float64 `json:"dom"`
		Load     float64 `json:"load"`
	}
	loadOnce := func(u string) timing {
		var nav timing
		run(t, ctx, "load "+u, chromedp.Navigate(u), chromedp.WaitReady("body", chromedp.ByQuery),
			chromedp.Poll(`performance.getEntriesByType("navigation")[0].loadEventEnd > 0`, nil, chromedp.WithPollingTimeout(10*time.Second)),
			chromedp.Evaluate(`(() => { const n = performance.getEntriesByType("navigation")[0];
				return {response: n.responseEnd - n.startTime, dom: n.domContentLoadedEventEnd - n.startTime, load: n.loadEventEnd - n.startTime}; })()`, &nav))
		return nav
	}
	// Blank page and dashboard page in turns, so that both see the same
	// load; the median of 7 differences is held to 200 ms.
	for _, p := range pages {
		var over, loads, bases []float64
		var last timing
		for range 7 {
			base := loadOnce(blank.URL).Load
			last = loadOnce(ui + p)
			over, loads, bases = append(over, last.Load-base), append(loads, last.Load), append(bases, base)
		}
		slices.Sort(over)
		slices.Sort(loads)
		slices.Sort(bases)
		t.Logf("browser %s: load event at %.0f ms, blank page at %.0f ms, %.0f ms over it (medians of 7; last: response %.0f ms, DOMContentLoaded %.0f ms)",
			p, loads[3], bases[3], over[3], last.Response, last.DOM)
	}
}
