package kube

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/berth-dev/berth/sandbox"
)

func testRuntime(t *testing.T) *Runtime {
	o := Options{Namespace: "ns", AgentImage: "reg/berth@sha256:1", Image: "reg/debian@sha256:2", RuntimeClass: "gvisor",
		AgentFrom: []string{"10.88.0.1/32"}, DenyCIDRs: []string{"10.88.0.0/16", "10.96.0.0/24", "fd00::/8"}}
	o.Client = nil
	if err := (&o).defaultsNoClient(); err != nil {
		t.Fatal(err)
	}
	return &Runtime{o: o}
}

// The NetworkPolicy: ingress only to the agent's port from Berth; egress
// none when disabled, everything but the cluster, the node and link-local
// when enabled.
func TestNetworkPolicy(t *testing.T) {
	r := testRuntime(t)
	for _, egress := range []bool{false, true} {
		spec := sandbox.Spec{ID: "s1", Egress: egress}
		np := r.networkPolicy("berth-s1", spec, r.labels(spec))
		if !slices.Contains(np.Spec.PolicyTypes, "Egress") || !slices.Contains(np.Spec.PolicyTypes, "Ingress") {
			t.Fatalf("policy types %v", np.Spec.PolicyTypes)
		}
		if np.Spec.PodSelector.MatchLabels[LabelSandbox] != "s1" {
			t.Errorf("selector %v", np.Spec.PodSelector)
		}
		in := np.Spec.Ingress
		if len(in) != 1 || len(in[0].Ports) != 1 || in[0].Ports[0].Port.IntValue() != 7070 || len(in[0].From) != 1 || in[0].From[0].IPBlock.CIDR != "10.88.0.1/32" {
			t.Errorf("ingress %+v", in)
		}
		switch {
		case !egress && len(np.Spec.Egress) != 0:
			t.Errorf("egress disabled, yet rules %+v", np.Spec.Egress)
		case egress:
			b := np.Spec.Egress[0].To[0].IPBlock
			if len(np.Spec.Egress) != 1 || b.CIDR != "0.0.0.0/0" || !slices.Equal(b.Except, []string{"169.254.0.0/16", "10.88.0.0/16", "10.96.0.0/24"}) {
				t.Errorf("egress %+v %+v", np.Spec.Egress, b)
			}
		}
	}
}

// The Pod: no service account token, the token mounted root-only into the
// agent's container only, the agent dropping to the code's uid, limits.
func TestPod(t *testing.T) {
	r := testRuntime(t)
	spec := sandbox.Spec{ID: "s1", Limits: sandbox.Limits{MemoryBytes: 256 << 20, CPU: 0.5, DiskBytes: 1 << 30}, Owner: sandbox.Owner{Kind: "pool", Name: "p"}}
	b := &box{id: "s1", name: podName("s1"), token: "t"}
	p := r.pod(b, spec, r.labels(spec), extras{})
	if *p.Spec.AutomountServiceAccountToken || *p.Spec.EnableServiceLinks || *p.Spec.RuntimeClassName != "gvisor" {
		t.Errorf("pod spec %+v", p.Spec)
	}
	if p.Labels[LabelOwnerKind] != "pool" || p.Labels[LabelOwnerName] != "p" || p.Labels[LabelManagedBy] != "berth" {
		t.Errorf("labels %v", p.Labels)
	}
	for _, v := range p.Spec.Volumes {
		if v.Secret != nil && (*v.Secret.DefaultMode != 0o400 || v.Secret.SecretName != "berth-s1-agent") {
			t.Errorf("token volume %+v", v.Secret)
		}
	}
	mounts := func(c corev1.Container) (names []string) {
		for _, m := range c.VolumeMounts {
			names = append(names, m.Name)
		}
		return names
	}
	if init := p.Spec.InitContainers[0]; slices.Contains(mounts(init), "token") || *init.SecurityContext.RunAsUser == 0 {
		t.Errorf("init container %v %+v", mounts(init), init.SecurityContext)
	}
	c := p.Spec.Containers[0]
	if !slices.Contains(mounts(c), "token") || c.Image != "reg/debian@sha256:2" {
		t.Errorf("main container %v %s", mounts(c), c.Image)
	}
	if !slices.Contains(c.Command, "--user") || c.Command[slices.Index(c.Command, "--user")+1] != "1000:1000" || !slices.Contains(c.Command, "--token-file") {
		t.Errorf("command %v", c.Command)
	}
	sc := c.SecurityContext
	if *sc.AllowPrivilegeEscalation || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 4 {
		t.Errorf("security context %+v", sc)
	}
	if c.Resources.Limits.Memory().Value() != 256<<20 || c.Resources.Limits.Cpu().MilliValue() != 500 ||
		c.Resources.Requests.Memory().Value() != 32<<20 || c.Resources.Requests.Cpu().MilliValue() != 50 {
		t.Errorf("resources %+v", c.Resources)
	}
}

// TestEgressGate: a Pod without egress waits in an init container until
// its NetworkPolicy refuses a connection; one with egress does not.
func TestEgressGate(t *testing.T) {
	r := testRuntime(t)
	for _, egress := range []bool{false, true} {
		spec := sandbox.Spec{ID: "s1", Egress: egress}
		p := r.pod(&box{id: "s1", name: podName("s1"), token: "t"}, spec, r.labels(spec), extras{})
		var gates int
		for _, c := range p.Spec.InitContainers {
			if c.Name == "egress-gate" {
				gates++
				if !slices.Contains(c.Command, "--wait-denied") || len(c.VolumeMounts) != 0 || *c.SecurityContext.RunAsUser == 0 {
					t.Errorf("gate %+v", c)
				}
			}
		}
		if want := map[bool]int{false: 1, true: 0}[egress]; gates != want {
			t.Errorf("egress %v: %d gates, want %d", egress, gates, want)
		}
	}
}
