package server

import (
	"context"
	"log/slog"

	"github.com/berth-dev/berth/internal/kubepool"
	"github.com/berth-dev/berth/internal/leader"
	"github.com/berth-dev/berth/pool"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/kube"
)

// poolCluster is where the pools' sandboxes live for several replicas:
// with --runtime kube --state kube, the shared kube runtime's namespace;
// else nil (each process keeps its own).
func poolCluster(runtimes map[string]sandbox.Runtime, state string) pool.Cluster {
	if state != StateKube {
		return nil
	}
	for _, rt := range runtimes {
		if k := kubepool.Find(rt); k != nil {
			return kubepool.New(k)
		}
	}
	return nil
}

// elect returns what says whether this replica leads: with shared
// sandboxes, an election on the state's Lease (in a Pod or not); else as
// package leader does for the environment (in a Pod: its namespace's
// Lease; on one machine: always).
func elect(ctx context.Context, o Options, shared bool, instance string, log *slog.Logger) (leader.Checker, <-chan struct{}, error) {
	if !shared {
		return leader.ForEnvironment(ctx, log)
	}
	closed := make(chan struct{})
	close(closed)
	cfg, ns, err := kubeConfig(o.Kube)
	if err != nil {
		return nil, closed, err
	}
	e, err := leader.ForConfig(ctx, cfg, ns, instance, log)
	if err != nil {
		return nil, closed, err
	}
	return e, e.Done(), nil
}

// useLogins gives the kube runtimes the server's registry logins: their
// Pods pull images themselves, with a pull Secret made from the login for
// the image's registry when the sandbox brings none (an app's own).
func useLogins(runtimes map[string]sandbox.Runtime, logins kube.Credentials) {
	for _, rt := range runtimes {
		for _, r := range sandbox.Unwrap(rt) {
			if k, ok := r.(*kube.Runtime); ok {
				k.SetCredentials(logins)
			}
		}
	}
}
