package server

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/berth-dev/berth/internal/leader"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/kube"
)

// electLeader is package leader's election among the Berth replicas: in a
// Pod, on the Lease of its namespace (leader.ForEnvironment); outside one
// with --state kube (several `berth up` on hosts sharing the namespace),
// on the same Lease, named by this host and process, if the replicas share
// their sandboxes (the kube driver's shared mode: a replica with sandboxes
// of its own must reap and scale its own); else Always.
func electLeader(ctx context.Context, o Options, runtimes map[string]sandbox.Runtime, log *slog.Logger) (leader.Checker, <-chan struct{}, error) {
	if _, err := rest.InClusterConfig(); err == nil || o.State != StateKube || !sharedRuntimes(runtimes) {
		return leader.ForEnvironment(ctx, log)
	}
	cfg, ns, err := kubeConfig(o.Kube)
	if err != nil {
		return nil, nil, fmt.Errorf("leader: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("leader: %w", err)
	}
	host, _ := os.Hostname()
	e, err := leader.Elect(ctx, leader.Options{Client: cs.CoordinationV1(), Namespace: ns, Name: leader.LeaseName,
		Identity: fmt.Sprintf("%s-%d", host, os.Getpid()), Logger: log})
	if err != nil {
		return nil, nil, err
	}
	return e, e.Done(), nil
}

// sharedRuntimes reports whether the runtimes' sandboxes are shared by the
// Berth replicas (the kube driver in shared mode).
func sharedRuntimes(runtimes map[string]sandbox.Runtime) bool {
	for _, rt := range runtimes {
		for _, r := range sandbox.Unwrap(rt) {
			if k, ok := r.(*kube.Runtime); ok && k.Options().Shared {
				return true
			}
		}
	}
	return false
}
