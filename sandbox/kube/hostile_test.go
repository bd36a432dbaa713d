package kube_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/internal/testutil"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/kube"
)

// TestHostile: code in a pool Pod (egress disabled) cannot read its
// agent's token, cannot gain privileges, cannot reach the Kubernetes API,
// another Pod's agent, the node, or anything at all; with egress enabled,
// still not the API, the node or another Pod. A lax runtime (its policy
// admitting the Pod network to agents, egress to everything) is the
// control: the same probes from its Pods do connect, so the probes can
// see an open path.
func TestHostile(t *testing.T) {
	for _, c := range classes {
		t.Run(c.name, func(t *testing.T) {
			rt := newRuntime(t, c.rc, nil)
			sb := start(t, rt, sandbox.Spec{ID: "hostile", Owner: sandbox.Owner{Kind: "pool", Name: "h"}})
			other := start(t, rt, sandbox.Spec{ID: "victim", Owner: sandbox.Owner{Kind: "pool", Name: "h"}})
			checkToken(t, sb)
			victim := net.JoinHostPort(podIP(t, other), "7070")
			host := hostListener(t)
			forbidden := []string{victim, host, apiSvcIP + ":443", apiServer(t), podGW + ":6443", podGW + ":10250"}
			for a, r := range connects(t, sb, forbidden...) {
				if r == "open" {
					t.Errorf("egress disabled: code reached %s", a)
				}
			}
			out := shell(t, sb, "getent hosts kubernetes.default.svc.cluster.local example.com; echo rc=$?")
			if !strings.HasSuffix(out, "rc=2") {
				t.Errorf("egress disabled: a name resolved: %q", out)
			}

			withEgress := start(t, rt, sandbox.Spec{ID: "egress", Egress: true})
			for a, r := range connects(t, withEgress, forbidden...) {
				if r == "open" {
					t.Errorf("egress enabled: code reached %s", a)
				}
			}

			lax := newRuntime(t, c.rc, func(o *kube.Options) {
				o.AgentFrom = []string{"0.0.0.0/0"}
				o.DenyCIDRs = nil
			})
			laxVictim := start(t, lax, sandbox.Spec{ID: "laxvictim"})
			laxProbe := start(t, lax, sandbox.Spec{ID: "laxprobe", Egress: true})
			control := []string{net.JoinHostPort(podIP(t, laxVictim), "7070"), host}
			for a, r := range connects(t, laxProbe, control...) {
				if r != "open" {
					t.Errorf("control: a lax Pod could not reach %s (%s): the probe proves nothing", a, r)
				}
			}
		})
	}
}

// checkToken runs the hunt in sb and checks the code's privileges.
func checkToken(t *testing.T, sb sandbox.Sandbox) {
	t.Helper()
	sec, err := cluster.cs.CoreV1().Secrets(cluster.ns).Get(context.Background(), "berth-"+sb.ID()+"-agent", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	token := string(sec.Data["token"])
	if len(token) < agent.MinTokenLen {
		t.Fatalf("token %d bytes", len(token))
	}
	out := sandboxtestExec(t, sb, agentCommand(append([]string{"python3", "-c", testutil.TokenHunt},
		testutil.TokenHuntArgs(token, "/.berth/token/token", "/.berth/token/..data/token")...)))
	if strings.TrimSpace(out.Stdout) != "found:" || out.ExitCode != 0 {
		t.Errorf("hunt for the token: %+v", out)
	}
	got := shell(t, sb, "id -u; suid-id -u; grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status; cat /.berth/token/token 2>&1 >/dev/null | sed 's/.*: //'")
	want := "1000\n1000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\nPermission denied"
	if got != want {
		t.Errorf("privileges:\n%s\nwant\n%s", got, want)
	}
}

// TestNoEgressFromTheStart: code run the moment Start returns, in a Pod
// without egress, already reaches nothing: the Pod's gate held it back
// until its NetworkPolicy was in force (an enforcer learns a Pod's address
// from its status, after the Pod has it).
func TestNoEgressFromTheStart(t *testing.T) {
	for _, c := range classes {
		t.Run(c.name, func(t *testing.T) {
			rt := newRuntime(t, c.rc, nil)
			host := hostListener(t)
			for i := range 3 {
				sb := start(t, rt, sandbox.Spec{ID: fmt.Sprintf("first-%d", i)})
				for a, r := range connects(t, sb, host, apiSvcIP+":443") {
					if r == "open" {
						t.Errorf("sandbox %d reached %s at once", i, a)
					}
				}
				pod, err := cluster.cs.CoreV1().Pods(cluster.ns).Get(context.Background(), "berth-"+sb.ID(), metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				gated := false
				for _, s := range pod.Status.InitContainerStatuses {
					gated = gated || (s.Name == "egress-gate" && s.State.Terminated != nil && s.State.Terminated.ExitCode == 0)
				}
				if !gated {
					t.Errorf("sandbox %d: no egress gate ran: %+v", i, pod.Status.InitContainerStatuses)
				}
			}
		})
	}
}
