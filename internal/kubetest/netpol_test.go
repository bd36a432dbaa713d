package kubetest_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/internal/kubetest"
)

// The cluster enforces NetworkPolicy (kube-router's firewall; the bridge CNI
// alone does not): a Pod under a deny-all-egress policy connects nowhere (a
// listener on the host, another Pod, the API's ClusterIP), while a Pod
// without one reaches the same host listener and Pod. Under runc and gVisor.
func TestNetworkPolicyDenyEgress(t *testing.T) {
	k := kubetest.Cluster(t)
	image := k.ProbeImage(t)
	ns := k.Namespace(t, "netpol")
	ctx := context.Background()

	host := hostListener(t, apiAdvertiseAddress(t, k))
	create(t, k, ns, probePod("web", image, "", "serve", ":8080"))
	web := net.JoinHostPort(k.WaitRunning(t, ns, "web", 90*time.Second).Status.PodIP, "8080")
	api := "10.96.0.1:443"

	deny := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "deny-egress"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"egress": "deny"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
		},
	}
	if _, err := k.Client.NetworkingV1().NetworkPolicies(ns).Create(ctx, deny, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	for _, rc := range []string{"", "gvisor"} {
		suffix := map[string]string{"": "runc", "gvisor": "gvisor"}[rc]
		t.Run("runtime="+suffix, func(t *testing.T) {
			targets := []string{host.addr, web, api}
			// The delay lets the firewall see the new Pod before it dials:
			// kube-router learns a Pod's IP from its status, a few hundred
			// milliseconds after the container started (measured: a dial at
			// 0 ms got through, at 500 ms it was refused).
			dialArgs := append([]string{"dial", "-delay", "3s", "-timeout", "2s"}, targets...)
			open := probePod("open-"+suffix, image, rc, dialArgs...)
			closed := probePod("closed-"+suffix, image, rc, dialArgs...)
			closed.Labels["egress"] = "deny"
			create(t, k, ns, open)
			create(t, k, ns, closed)
			openIP := k.WaitRunning(t, ns, open.Name, 90*time.Second).Status.PodIP
			closedIP := k.WaitRunning(t, ns, closed.Name, 90*time.Second).Status.PodIP

			openLog := waitDone(t, k, ns, open.Name)
			closedLog := waitDone(t, k, ns, closed.Name)
			t.Logf("without policy:\n%s", openLog)
			t.Logf("deny-all egress:\n%s", closedLog)
			for _, a := range []string{host.addr, web} {
				if !strings.Contains(openLog, "ok "+a+"\n") {
					t.Errorf("pod without policy could not reach %s:\n%s", a, openLog)
				}
			}
			for _, a := range targets {
				if !strings.Contains(closedLog, "fail "+a+":") {
					t.Errorf("pod under deny-all egress reached %s:\n%s", a, closedLog)
				}
			}
			if !host.saw(openIP) {
				t.Errorf("host listener saw no connection from the open pod %s (saw %v)", openIP, host.peers())
			}
			if host.saw(closedIP) {
				t.Errorf("host listener saw a connection from the denied pod %s", closedIP)
			}
		})
	}
}

// apiAdvertiseAddress is the host's address on the pod bridge: the address
// the API server advertises in the "kubernetes" EndpointSlice.
func apiAdvertiseAddress(t *testing.T, k *kubetest.Kube) string {
	t.Helper()
	es, err := k.Client.DiscoveryV1().EndpointSlices("default").Get(context.Background(), "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es.Endpoints {
		for _, a := range e.Addresses {
			return a
		}
	}
	t.Fatal("the kubernetes EndpointSlice has no address")
	return ""
}

type listener struct {
	addr string
	mu   sync.Mutex
	seen map[string]int
}

func hostListener(t *testing.T, ip string) *listener {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	l := &listener{addr: ln.Addr().String(), seen: map[string]int{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			l.mu.Lock()
			l.seen[h]++
			l.mu.Unlock()
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return l
}

func (l *listener) saw(ip string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen[ip] > 0
}

func (l *listener) peers() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := make(map[string]int, len(l.seen))
	for k, v := range l.seen {
		m[k] = v
	}
	return m
}

// waitDone waits for the probe's "done" line and returns its log.
func waitDone(t *testing.T, k *kubetest.Kube, ns, name string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		log := k.Logs(t, ns, name)
		if strings.Contains(log, "done\n") {
			return log
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s did not finish dialing:\n%s", name, log)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// The start-up window can be closed: an init container that waits until a
// connection is refused holds the Pod's code back until the policy is in
// force, so code dialing at once (no delay) under deny-all egress connects
// nowhere.
func TestNetworkPolicyInitGate(t *testing.T) {
	k := kubetest.Cluster(t)
	image := k.ProbeImage(t)
	ns := k.Namespace(t, "netgate")
	ctx := context.Background()
	host := hostListener(t, apiAdvertiseAddress(t, k))
	deny := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "deny-egress"},
		Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}},
	}
	if _, err := k.Client.NetworkingV1().NetworkPolicies(ns).Create(ctx, deny, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	api := "10.96.0.1:443"
	for _, rc := range []string{"", "gvisor"} {
		name := "gated-" + map[string]string{"": "runc", "gvisor": "gvisor"}[rc]
		t.Run(name, func(t *testing.T) {
			p := probePod(name, image, rc, "dial", "-timeout", "2s", host.addr, api)
			gate := p.Spec.Containers[0]
			gate.Name, gate.Args = "gate", []string{"wait-denied", api}
			p.Spec.InitContainers = append(p.Spec.InitContainers, gate)
			create(t, k, ns, p)
			ip := k.WaitRunning(t, ns, name, 90*time.Second).Status.PodIP
			log := waitDone(t, k, ns, name)
			t.Logf("gated pod:\n%s", log)
			for _, a := range []string{host.addr, api} {
				if !strings.Contains(log, "fail "+a+":") {
					t.Errorf("gated pod under deny-all egress reached %s:\n%s", a, log)
				}
			}
			if host.saw(ip) {
				t.Errorf("host listener saw a connection from the gated pod %s", ip)
			}
		})
	}
}
