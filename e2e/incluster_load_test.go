package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// sessionPost sends one JSON-RPC message in session sid ("" for none) and
// returns the status, the session id the answer carries and the body.
func sessionPost(hc *http.Client, url, sid, body string) (int, string, string, error) {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0, "", "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if sid != "" {
		req.Header.Set("Mcp-Session-Id", sid)
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Mcp-Session-Id"), string(b), err
}

// mcpSession opens a session (initialize, initialized) and calls a tool in
// it; it returns the session id, or what went wrong.
func mcpSession(hc *http.Client, url string) (string, bool) {
	st, sid, body, err := sessionPost(hc, url, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"incluster","version":"1"}}}`)
	if err != nil || st != http.StatusOK || sid == "" {
		return fmt.Sprintf("initialize: %d %v %s", st, err, body), false
	}
	if st, _, body, err := sessionPost(hc, url, sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); err != nil || st != http.StatusAccepted {
		return fmt.Sprintf("initialized: %d %v %s", st, err, body), false
	}
	if _, why, ok := simpleTextCall(hc, url, sid); !ok {
		return "tools/call: " + why, false
	}
	return sid, true
}

// simpleTextCall calls the everything server's test_simple_text in session sid.
// The status is 0 and why says what failed when no answer came.
func simpleTextCall(hc *http.Client, url, sid string) (st int, why string, ok bool) {
	st, _, body, err := sessionPost(hc, url, sid, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"test_simple_text","arguments":{}}}`)
	if err != nil {
		msg := err.Error()
		return st, msg[strings.LastIndex(msg, ": ")+1:], false
	}
	return st, fmt.Sprintf("status %d", st), st == http.StatusOK && strings.Contains(body, `"result"`) && !strings.Contains(body, `"error"`)
}

// loadStats count what the clients saw.
type loadStats struct {
	ok, failed, reopened atomic.Int64
	lastFailure          atomic.Int64 // unix nanoseconds
	mu                   sync.Mutex
	reasons              map[string]int
	lastOK               []atomic.Int64 // per worker, unix nanoseconds
}

func (s *loadStats) fail(why string) {
	s.failed.Add(1)
	s.lastFailure.Store(time.Now().UnixNano())
	s.mu.Lock()
	s.reasons[why]++
	s.mu.Unlock()
}

// worker calls a tool in its session through its own connection until ctx
// ends. A 404 means the session is gone (its app replica with it): it opens
// a new one, as MCP clients do; anything else that is not a result is a
// failure.
func (s *loadStats) worker(ctx context.Context, i int, url, sid string) {
	hc := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	for ctx.Err() == nil {
		st, why, ok := simpleTextCall(hc, url, sid)
		switch {
		case ok:
			s.ok.Add(1)
			s.lastOK[i].Store(time.Now().UnixNano())
		case st == http.StatusNotFound:
			s.reopened.Add(1)
			if n, ok := mcpSession(hc, url); ok {
				sid = n
			} else {
				s.fail("reopen " + n)
			}
		default:
			s.fail(why)
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// killUnderLoad deletes the Berth Pod that served most of the calls (with
// grace seconds to stop; 0 kills it at once) while workers call tools in
// their sessions through the Service, and checks that the configuration
// stays and that every session works again through the other replica.
func (c *inCluster) killUnderLoad(grace int64) {
	t := c.t
	const workers = 8
	url := c.front + "/apps/everything/mcp"
	s := &loadStats{reasons: map[string]int{}, lastOK: make([]atomic.Int64, workers)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range workers {
		sid, ok := mcpSession(&http.Client{Timeout: 10 * time.Second}, url)
		if !ok {
			cancel()
			t.Fatalf("session %d: %s", i, sid)
		}
		wg.Add(1)
		go func() { defer wg.Done(); s.worker(ctx, i, url, sid) }()
	}
	defer func() { cancel(); wg.Wait() }()
	served := c.mcpRequests()
	time.Sleep(3 * time.Second)
	before := s.ok.Load()
	if s.failed.Load() != 0 || s.reopened.Load() != 0 {
		t.Fatalf("before the kill: %d failures, %d sessions reopened (%v)", s.failed.Load(), s.reopened.Load(), s.reasons)
	}
	victim, calls := "", 0
	for pod, n := range c.mcpRequests() {
		if n-served[pod] > calls {
			victim, calls = pod, n-served[pod]
		}
	}
	if victim == "" {
		t.Fatalf("no Berth Pod logged the workers' calls")
	}

	killed := time.Now()
	if err := c.k.Client.CoreV1().Pods(c.ns).Delete(context.Background(), victim, metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
		t.Fatal(err)
	}
	replaced := c.waitTwoReady(victim, 90*time.Second)
	time.Sleep(5 * time.Second)
	settled := time.Now()
	time.Sleep(5 * time.Second)
	cancel()
	wg.Wait()

	failover := time.Duration(0)
	if last := s.lastFailure.Load(); last > killed.UnixNano() {
		failover = time.Duration(last - killed.UnixNano())
	}
	t.Logf("deleted %s (grace %ds; it had served %d of the calls in 3 s) under load (%d sessions): %d calls before, %d after; "+
		"%d failed, %d sessions reopened (404); failures ended %v after the kill; replacement Ready after %v; failures by reason: %v",
		victim, grace, calls, workers, before, s.ok.Load()-before, s.failed.Load(), s.reopened.Load(),
		failover.Round(time.Millisecond), replaced.Round(time.Millisecond), s.reasons)
	if failover > 20*time.Second {
		t.Errorf("calls still failed %v after the kill", failover)
	}
	for i := range s.lastOK {
		if time.Unix(0, s.lastOK[i].Load()).Before(settled) {
			t.Errorf("session %d got no answer in the last 5 s", i)
		}
	}
	c.configKept()
}

// mcpRequests counts, per Berth Pod, the MCP requests its access log shows.
func (c *inCluster) mcpRequests() map[string]int {
	out := map[string]int{}
	for _, p := range c.berthPods() {
		out[p.Name] = strings.Count(c.logs(p.Name), "path=/apps/everything/mcp")
	}
	return out
}

// configKept checks, through the control API, that the apps and pools are
// all still there.
func (c *inCluster) configKept() {
	apps, pools := c.cli("app", "list"), c.cli("pool", "list")
	for _, want := range []string{"everything ", "everything-cr"} {
		if !strings.Contains(apps, want) {
			c.t.Errorf("after the kill, app list lacks %q:\n%s", want, apps)
		}
	}
	if !strings.Contains(pools, "default") {
		c.t.Errorf("after the kill, pool list lacks the default pool:\n%s", pools)
	}
}

// waitTwoReady waits until the Deployment again has 2 Ready Pods, none of
// them victim, and returns how long that took.
func (c *inCluster) waitTwoReady(victim string, timeout time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	for {
		ready := 0
		for _, p := range c.berthPods() {
			for _, cond := range p.Status.Conditions {
				if p.Name != victim && cond.Type == "Ready" && cond.Status == "True" {
					ready++
				}
			}
		}
		if ready == 2 {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			c.t.Fatalf("no 2 Ready Berth replicas %v after the kill", timeout)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
