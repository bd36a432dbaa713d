package server

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/berth-dev/berth/internal/leader"
)

// electLeader is package leader's election among the Berth replicas: in a
// Pod, on the Lease of its namespace (leader.ForEnvironment); outside one
// with --state kube (several `berth up` on hosts sharing the namespace),
// on the same Lease, named by this host and process; else Always.
func electLeader(ctx context.Context, o Options, log *slog.Logger) (leader.Checker, <-chan struct{}, error) {
	if _, err := rest.InClusterConfig(); err == nil || o.State != StateKube {
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
