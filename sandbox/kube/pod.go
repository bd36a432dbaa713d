package kube

import (
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/berth-dev/berth/sandbox"
)

// Paths in a sandbox's main container.
const (
	containerName = "sandbox"
	agentDir      = "/.berth/bin"   // the agent's emptyDir, read-only
	tokenDir      = "/.berth/token" // the token's Secret, root-only
	tokenKey      = "token"
	workspace     = "/mnt/data"
)

// secret holds the sandbox's agent token.
func (r *Runtime) secret(b *box, labels map[string]string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: b.name + "-agent", Namespace: r.o.Namespace, Labels: labels},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{tokenKey: []byte(b.token)},
	}
}

// networkPolicy admits Berth to the agent's port only, and lets the Pod
// start no connection (egress disabled) or none to the cluster, the node
// or link-local addresses (egress enabled).
func (r *Runtime) networkPolicy(name string, spec sandbox.Spec, labels map[string]string) *networkingv1.NetworkPolicy {
	tcp := corev1.ProtocolTCP
	port := intstr.FromInt32(int32(r.o.AgentPort))
	var from []networkingv1.NetworkPolicyPeer
	for _, c := range r.o.AgentFrom {
		from = append(from, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: c}})
	}
	if len(r.o.AgentFromPods) > 0 {
		from = append(from, networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: r.o.AgentFromPods}})
	}
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.o.Namespace, Labels: labels},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{
				LabelManagedBy: managedBy, LabelInstance: r.o.Instance, LabelSandbox: spec.ID,
			}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}},
				From:  from,
			}},
			// No egress rule: no egress at all.
		},
	}
	if spec.Egress {
		np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{
			To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
				CIDR:   "0.0.0.0/0",
				Except: append([]string{metadataCIDR}, ipv4(r.o.DenyCIDRs)...),
			}}},
		}}
	}
	return np
}

// ipv4 keeps the IPv4 CIDRs (an IPBlock's Except must lie in its CIDR).
func ipv4(cidrs []string) []string {
	var out []string
	for _, c := range cidrs {
		if c != "" && !strings.Contains(c, ":") {
			out = append(out, c)
		}
	}
	return out
}

// pod is the sandbox's Pod.
func (r *Runtime) pod(b *box, spec sandbox.Spec, labels map[string]string, ex extras) *corev1.Pod {
	l := spec.Limits.WithDefaults(r.o.Defaults)
	image := spec.Image
	if image == "" {
		image = r.o.Image
	}
	uid, gid := r.o.UID, r.o.GID
	if spec.Root != nil && spec.Root.UID != 0 {
		uid, gid = int64(spec.Root.UID), int64(spec.Root.GID)
	}
	no := false
	var runtimeClass *string
	if r.o.RuntimeClass != "" {
		runtimeClass = &r.o.RuntimeClass
	}
	grace := int64(r.o.DeleteGrace.Seconds())
	disk := resource.NewQuantity(l.DiskBytes, resource.BinarySI)
	pullSecrets := ex.pullSecrets
	for _, s := range r.o.PullSecrets {
		pullSecrets = append(pullSecrets, corev1.LocalObjectReference{Name: s})
	}
	command := []string{agentDir + "/berth-agent", "agent",
		"--listen", ":" + strconv.Itoa(r.o.AgentPort),
		"--token-file", tokenDir + "/" + tokenKey,
		"--user", strconv.FormatInt(uid, 10) + ":" + strconv.FormatInt(gid, 10),
		"--workspace", workspace,
		"--max-procs", strconv.FormatInt(sandbox.UserProcs(l.Pids), 10),
	}
	for _, d := range ex.own {
		command = append(command, "--own", d)
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: b.name, Namespace: r.o.Namespace, Labels: labels},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			Hostname:                      "sandbox",
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			RuntimeClassName:              runtimeClass,
			TerminationGracePeriodSeconds: &grace,
			ImagePullSecrets:              pullSecrets,
			SecurityContext: &corev1.PodSecurityContext{
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Volumes: append([]corev1.Volume{
				{Name: "agent", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: resource.NewQuantity(256<<20, resource.BinarySI)}}},
				{Name: "token", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
					SecretName: b.name + "-agent", DefaultMode: ptr(int32(0o400)),
					Items: []corev1.KeyToPath{{Key: tokenKey, Path: tokenKey}},
				}}},
				{Name: "workspace", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: disk}}},
				{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: disk}}},
			}, ex.volumes...),
			InitContainers: r.initContainers(spec),
			Containers: []corev1.Container{{
				Name:      containerName,
				Image:     image,
				Command:   command,
				Ports:     []corev1.ContainerPort{{Name: "agent", ContainerPort: int32(r.o.AgentPort), Protocol: corev1.ProtocolTCP}},
				Resources: resources(l, r.o.Requests),
				VolumeMounts: append([]corev1.VolumeMount{
					{Name: "agent", MountPath: agentDir, ReadOnly: true},
					{Name: "token", MountPath: tokenDir, ReadOnly: true},
					{Name: "workspace", MountPath: workspace},
					{Name: "tmp", MountPath: "/tmp"},
				}, ex.mounts...),
				// The agent starts as root to read the token and hand the
				// volumes to the code's uid, then drops to it: it needs
				// CHOWN, SETUID and SETGID for that (SETPCAP to empty its
				// bounding set first) and nothing else, and
				// nothing in the container can gain privileges later.
				SecurityContext: &corev1.SecurityContext{
					RunAsUser: ptr(int64(0)), RunAsGroup: ptr(int64(0)), RunAsNonRoot: &no,
					AllowPrivilegeEscalation: &no, Privileged: &no,
					Capabilities: &corev1.Capabilities{
						Drop: []corev1.Capability{"ALL"},
						Add:  []corev1.Capability{"CHOWN", "SETUID", "SETGID", "SETPCAP"},
					},
				},
			}},
		},
	}
}

// resources are a container's limits from l and requests from req,
// capped by the limits.
func resources(l, req sandbox.Limits) corev1.ResourceRequirements {
	rr := corev1.ResourceRequirements{Limits: corev1.ResourceList{}, Requests: corev1.ResourceList{}}
	if l.MemoryBytes > 0 {
		rr.Limits[corev1.ResourceMemory] = *resource.NewQuantity(l.MemoryBytes, resource.BinarySI)
		rr.Requests[corev1.ResourceMemory] = *resource.NewQuantity(min(l.MemoryBytes, max(req.MemoryBytes, 1<<20)), resource.BinarySI)
	}
	if l.CPU > 0 {
		rr.Limits[corev1.ResourceCPU] = *resource.NewMilliQuantity(int64(l.CPU*1000), resource.DecimalSI)
		rr.Requests[corev1.ResourceCPU] = *resource.NewMilliQuantity(int64(min(l.CPU, max(req.CPU, 0.001))*1000), resource.DecimalSI)
	}
	if l.DiskBytes > 0 {
		// The container's writable layer and logs; the emptyDirs have their
		// own sizes.
		rr.Limits[corev1.ResourceEphemeralStorage] = *resource.NewQuantity(l.DiskBytes, resource.BinarySI)
		rr.Requests[corev1.ResourceEphemeralStorage] = *resource.NewQuantity(min(l.DiskBytes, max(req.DiskBytes, 1<<20)), resource.BinarySI)
	}
	return rr
}

func ptr[T any](v T) *T { return &v }

// initContainers copy the agent into the Pod and, for a sandbox without
// egress, hold it back until its NetworkPolicy is in force: an enforcer
// learns a Pod's address from its status, so without the gate the
// sandbox's first moments would be unfiltered.
func (r *Runtime) initContainers(spec sandbox.Spec) []corev1.Container {
	no, yes := false, true
	install := corev1.Container{
		Name:    "agent-install",
		Image:   r.o.AgentImage,
		Command: []string{r.o.AgentBinary, "agent", "--install", agentDir + "/berth-agent"},
		// Berth's image is Berth's: pulled once per node, and not
		// again for each sandbox.
		ImagePullPolicy: corev1.PullIfNotPresent,
		VolumeMounts:    []corev1.VolumeMount{{Name: "agent", MountPath: agentDir}},
		Resources:       resources(sandbox.Limits{MemoryBytes: 64 << 20, CPU: 0.5}, sandbox.Limits{MemoryBytes: 16 << 20, CPU: 0.01}),
		SecurityContext: &corev1.SecurityContext{
			RunAsUser: ptr(int64(65534)), RunAsGroup: ptr(int64(65534)), RunAsNonRoot: &yes,
			AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &yes,
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}
	gate := install
	gate.Name = "egress-gate"
	gate.Command = []string{r.o.AgentBinary, "agent", "--wait-denied", "kubernetes", "--within", "60s"}
	gate.VolumeMounts = nil
	if spec.Egress {
		return []corev1.Container{install}
	}
	return []corev1.Container{install, gate}
}
