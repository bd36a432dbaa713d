package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/berth-dev/berth/server"
)

// alternate sends each request to the next of several Berth servers (as a
// Service in front of Berth replicas would), counting what each got.
type alternate struct {
	hosts []string
	n     atomic.Int64
	got   []atomic.Int64
}

func (a *alternate) RoundTrip(r *http.Request) (*http.Response, error) {
	i := int(a.n.Add(1)-1) % len(a.hosts)
	a.got[i].Add(1)
	r = r.Clone(r.Context())
	r.URL.Host = a.hosts[i]
	return http.DefaultTransport.RoundTrip(r)
}

// TestAppSessionAcrossBerthReplicas: two Berth servers that share the
// master key (as replicas of Berth behind one Service do) and nothing
// else, each running a replica of the same app. An MCP session whose
// requests alternate between them keeps its state: the one that did not
// see the initialize opens the sealed session id and reaches the other's
// replica (the replica's own session id, which the go-sdk server checks,
// comes out of the sealed one). A forged or altered id is refused with
// 404, and so is a session whose replica died, through either server.
func TestAppSessionAcrossBerthReplicas(t *testing.T) {
	dir := everythingServer(t)
	a := startBerth(t, "")
	dataB := t.TempDir()
	key, err := os.ReadFile(filepath.Join(a.dataDir, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataB, "master.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	b := startBerth(t, dataB)
	for _, s := range []*berth{a, b} {
		s.cli("app", "deploy", "shared", "--dir", dir, "--command", everythingCommand, "--min", "1", "--max", "1")
	}
	repA := a.waitReplicas("shared", 1).Replicas[0].ID
	repB := b.waitReplicas("shared", 1).Replicas[0].ID
	t.Logf("replica %s on the first Berth, %s on the second", repA, repB)

	hostOf := func(s *berth) string { return strings.TrimPrefix(s.info.PublicURL, "http://") }
	lb := &alternate{hosts: []string{hostOf(a), hostOf(b)}, got: make([]atomic.Int64, 2)}
	ctx := context.Background()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: a.info.PublicURL + "/apps/shared/mcp", HTTPClient: &http.Client{Transport: lb}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	sid := cs.ID()
	if !strings.HasPrefix(sid, "b1.") {
		t.Fatalf("the session id is not sealed: %q", sid)
	}
	for i := range 6 {
		if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "test_simple_text"}); err != nil {
			t.Fatalf("call %d: %v (requests: first %d, second %d)", i, err, lb.got[0].Load(), lb.got[1].Load())
		}
	}
	if lb.got[0].Load() < 3 || lb.got[1].Load() < 3 {
		t.Fatalf("the requests did not alternate: %d, %d", lb.got[0].Load(), lb.got[1].Load())
	}
	// The session lives on the replica that answered the initialize;
	// the other Berth's replica holds none.
	holder, other := a, b
	if b.appShow("shared").Replicas[0].Sessions == 1 {
		holder, other = b, a
	}
	if h, o := holder.appShow("shared").Replicas[0], other.appShow("shared").Replicas[0]; h.Sessions != 1 || o.Sessions != 0 {
		t.Fatalf("sessions: %+v and %+v, want 1 and 0", h, o)
	}
	repH := holder.appShow("shared").Replicas[0].ID

	urlB := b.info.PublicURL + "/apps/shared/mcp"
	urlO := other.info.PublicURL + "/apps/shared/mcp"
	if code, _ := call(t, urlO, sid, "tools/list"); code != http.StatusOK {
		t.Fatalf("the session through the Berth that does not hold it: HTTP %d", code)
	}
	// A second session, ended through the Berth that does not hold it.
	sid2, _ := initialize(t, holder.info.PublicURL+"/apps/shared/mcp")
	deleteSession(urlO, sid2)
	if code, _ := call(t, holder.info.PublicURL+"/apps/shared/mcp", sid2, "tools/list"); code != http.StatusNotFound {
		t.Fatalf("a session deleted through the other Berth: HTTP %d, want 404", code)
	}
	altered := []byte(sid)
	altered[len(altered)/2] ^= 1
	if altered[len(altered)/2] == '.' || altered[len(altered)/2] > 'z' {
		altered[len(altered)/2] = 'A'
	}
	for name, id := range map[string]string{
		"altered":  string(altered),
		"made up":  "b1." + strings.Repeat("A", 80),
		"unsealed": "00000000-0000-0000-0000-000000000000",
	} {
		for _, url := range []string{a.info.PublicURL + "/apps/shared/mcp", urlB} {
			if code, _ := call(t, url, id, "tools/list"); code != http.StatusNotFound {
				t.Errorf("%s session id through %s: HTTP %d, want 404", name, url, code)
			}
		}
	}

	// The replica dies: the session is stale through either server.
	killReplicaOf(t, holder, repH)
	deadline := time.Now().Add(60 * time.Second)
	for v := holder.appShow("shared"); len(v.Replicas) > 0 && v.Replicas[0].ID == repH; v = holder.appShow("shared") {
		if time.Now().After(deadline) {
			t.Fatalf("replica %s was not replaced", repH)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, url := range []string{urlO, holder.info.PublicURL + "/apps/shared/mcp"} {
		if code, _ := call(t, url, sid, "tools/list"); code != http.StatusNotFound {
			t.Fatalf("session of a dead replica through %s: HTTP %d, want 404", url, code)
		}
	}
}

// killReplicaOf kills the app's process in a replica of one Berth server
// (another server may run a replica of the same ID).
func killReplicaOf(t *testing.T, s *berth, replica string) {
	t.Helper()
	abs, _ := filepath.Abs(s.dataDir)
	inst := server.Instance(abs)
	var files []string
	for _, pat := range []string{"/sys/fs/cgroup/pids/berth/*/" + replica + "/cgroup.procs", "/sys/fs/cgroup/berth/*/" + replica + "/cgroup.procs"} {
		m, _ := filepath.Glob(pat)
		for _, f := range m {
			if strings.Contains(f, "/"+inst) {
				files = append(files, f)
			}
		}
	}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, p := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(p)
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			if strings.HasPrefix(string(comm), "everything") {
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				return
			}
		}
	}
	t.Fatalf("no app process found in replica %s of instance %s (cgroup files %v)", replica, inst, files)
}
