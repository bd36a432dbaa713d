package leader

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/berth-dev/berth/internal/apiservertest"
)

// cuttable fails every request once cut: a replica that crashed or lost
// the API, without releasing its Lease.
type cuttable struct {
	rt  http.RoundTripper
	cut atomic.Bool
}

func (c *cuttable) RoundTrip(r *http.Request) (*http.Response, error) {
	if c.cut.Load() {
		return nil, errors.New("cut off from the API")
	}
	return c.rt.RoundTrip(r)
}

func client(t *testing.T, cfg *rest.Config) (kubernetes.Interface, *cuttable) {
	cfg = rest.CopyConfig(cfg)
	cut := &cuttable{}
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { cut.rt = rt; return cut }
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, cut
}

// waitLeader waits until exactly want of the electors leads, and returns
// how long that took. No two ever lead at once meanwhile.
func waitLeader(t *testing.T, limit time.Duration, want *Elector, all ...*Elector) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		n := 0
		for _, e := range all {
			if e.IsLeader() {
				n++
			}
		}
		if n > 1 {
			t.Fatal("two replicas lead at once")
		}
		if want.IsLeader() {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("no takeover within %s (leader seen: %q)", limit, want.Leader())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLeaseFailover against a real kube-apiserver: of two replicas one
// leads; when its context ends it releases the Lease and the other takes
// over at its next try; when a leader is cut off from the API (a crash,
// without release) the other takes over once the Lease has run out, and
// the cut-off one has stepped down before.
func TestLeaseFailover(t *testing.T) {
	s := apiservertest.Start(t)
	const lease, renew, retry = 3 * time.Second, 2 * time.Second, 250 * time.Millisecond
	elect := func(id string) (*Elector, context.CancelFunc, *cuttable) {
		ctx, cancel := context.WithCancel(context.Background())
		c, cut := client(t, s.Config)
		e, err := Elect(ctx, Options{Client: c.CoordinationV1(), Namespace: "default", Name: "berth-leader", Identity: id,
			LeaseDuration: lease, RenewDeadline: renew, RetryPeriod: retry})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cancel(); <-e.Done() })
		return e, cancel, cut
	}
	a, cancelA, _ := elect("berth-a")
	took := waitLeader(t, 10*time.Second, a, a)
	b, _, cutB := elect("berth-b")
	time.Sleep(2 * lease) // b stands, a keeps renewing
	if !a.IsLeader() || b.IsLeader() || b.Leader() != "berth-a" {
		t.Fatalf("a=%v b=%v b sees %q", a.IsLeader(), b.IsLeader(), b.Leader())
	}
	t.Logf("first leader after %s", took)

	// a's context ends: it releases the Lease, b takes over.
	cancelA()
	// Well under the Lease: without the release b would wait it out.
	release := waitLeader(t, lease/2, b, a, b)
	<-a.Done()
	t.Logf("takeover after the leader's context ended (Lease released): %s", release)

	// c stands; b is cut off from the API without releasing the Lease.
	c, _, _ := elect("berth-c")
	time.Sleep(lease)
	if !b.IsLeader() || c.IsLeader() {
		t.Fatalf("b=%v c=%v", b.IsLeader(), c.IsLeader())
	}
	cutB.cut.Store(true)
	crash := waitLeader(t, lease+renew+2*time.Second, c, b, c)
	// (waitLeader checked that b had stepped down by then.)
	t.Logf("takeover after the leader was cut off (Lease %s, renew deadline %s, retry %s): %s", lease, renew, retry, crash)
}

// TestOneMachine: outside a Pod, the process is always leader.
func TestOneMachine(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	c, done, err := ForEnvironment(context.Background(), nil)
	if err != nil || c != Always || !c.IsLeader() {
		t.Fatalf("ForEnvironment = %v, %v", c, err)
	}
	<-done
}
