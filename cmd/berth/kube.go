package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/kube"
)

// kubeFlags are berth up's flags for --runtime kube.
type kubeFlags struct {
	runtime, runtimeClass, agentImage, image string
	// namespace and kubeconfig are the shared --kube-namespace and
	// --kubeconfig (of --state kube too).
	namespace, kubeconfig string
	agentFrom, denyCIDRs  multiFlag
}

func (k *kubeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&k.runtime, "runtime", "local", "where sandboxes run: local (bwrap and gvisor on this host) or kube (Pods on the Kubernetes cluster of the in-cluster config or $KUBECONFIG)")
	fs.StringVar(&k.runtimeClass, "runtime-class", "gvisor", "with --runtime kube: the Pods' RuntimeClass (\"\": the cluster's default, usually runc)")
	fs.StringVar(&k.agentImage, "kube-agent-image", os.Getenv("BERTH_IMAGE"), "with --runtime kube: Berth's own image, whose /berth-agent is every Pod's agent [$BERTH_IMAGE] (default in a Pod: the image Berth runs from, found through $POD_NAME)")
	fs.StringVar(&k.image, "kube-image", "", "with --runtime kube: the image of sandboxes whose pool names none a registry can serve (with bash and python3)")
	fs.Var(&k.agentFrom, "kube-agent-from", "with --runtime kube: a CIDR Berth reaches the Pods' agents from (repeatable; default: Pods labelled app.kubernetes.io/name=berth)")
	fs.Var(&k.denyCIDRs, "kube-deny-cidr", "with --runtime kube: the cluster's or the node's network, never reached by sandboxes with egress (repeatable; 169.254.0.0/16 always)")
}

// newKubeRuntimes is the runtime map of --runtime kube: every runtime name
// a pool or an app may name (bwrap, gvisor, kube) runs Pods of the one
// RuntimeClass, so that pools keep their configuration. Shared (with
// --state kube): the replicas of the namespace share their sandboxes, under
// one instance label ("berth") instead of this data directory's.
func newKubeRuntimes(ctx context.Context, k *kubeFlags, instance string, shared bool, log *slog.Logger) (map[string]sandbox.Runtime, error) {
	cfg, ns, err := kubeConfig(k.kubeconfig)
	if err != nil {
		return nil, err
	}
	if k.namespace != "" {
		ns = k.namespace
	}
	if ns == "" {
		return nil, errors.New("--runtime kube: name the sandboxes' namespace with --kube-namespace")
	}
	// client-go's default (5 requests/s, bursts of 10) holds a session's
	// claim (a few reads and writes) up by a second once a few come
	// together; the API server has its own fairness.
	cfg.QPS, cfg.Burst = 100, 200
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	if shared {
		instance = ""
	}
	if k.agentImage == "" {
		if k.agentImage, err = ownImage(ctx, cs); err != nil {
			return nil, err
		}
	}
	rt, err := kube.New(ctx, kube.Options{
		Client: cs, Namespace: ns, Instance: instance, AgentImage: k.agentImage, Image: k.image,
		RuntimeClass: k.runtimeClass, AgentFrom: k.agentFrom, DenyCIDRs: k.denyCIDRs, Shared: shared,
	})
	if err != nil {
		return nil, err
	}
	log.Info("sandboxes are Pods", "namespace", ns, "runtimeClass", k.runtimeClass)
	return map[string]sandbox.Runtime{"kube": rt, "bwrap": rt, "gvisor": rt}, nil
}

// ownImage is the image Berth runs from when it runs in a Pod (the
// agent image, unless --kube-agent-image names another): its container's
// image by digest, as the kubelet resolved it. Outside a Pod it is "".
func ownImage(ctx context.Context, cs kubernetes.Interface) (string, error) {
	name, ns := os.Getenv("POD_NAME"), os.Getenv("POD_NAMESPACE")
	if ns == "" {
		b, _ := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
		ns = strings.TrimSpace(string(b))
	}
	if name == "" || ns == "" {
		return "", nil
	}
	pod, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("--runtime kube: Berth's own image (the agent's) from its Pod %s/%s: %w", ns, name, err)
	}
	return podImage(pod, os.Getenv("BERTH_CONTAINER")), nil
}

// podImage is the image of the Pod's container named container (default
// "berth", or the only one): the digest the kubelet pulled when it is
// known and the spec names a tag, else the spec's image.
func podImage(pod *corev1.Pod, container string) string {
	if container == "" {
		container = "berth"
		if len(pod.Spec.Containers) == 1 {
			container = pod.Spec.Containers[0].Name
		}
	}
	for _, c := range pod.Spec.Containers {
		if c.Name != container {
			continue
		}
		if strings.Contains(c.Image, "@") {
			return c.Image
		}
		for _, st := range pod.Status.ContainerStatuses {
			if st.Name == container && strings.Contains(st.ImageID, "@sha256:") {
				return strings.TrimPrefix(st.ImageID, "docker-pullable://")
			}
		}
		return c.Image
	}
	return ""
}

// kubeConfig is file's configuration if one is named; else the in-cluster
// configuration (and Berth's namespace) in a Pod, else $KUBECONFIG's (or
// ~/.kube/config's) current context.
func kubeConfig(file string) (*rest.Config, string, error) {
	if file == "" {
		if cfg, err := rest.InClusterConfig(); err == nil {
			ns, _ := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
			return cfg, strings.TrimSpace(string(ns)), nil
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = file
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil)
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("--runtime kube: no in-cluster config and no usable kubeconfig: %w", err)
	}
	ns, _, _ := cc.Namespace()
	return cfg, ns, nil
}
