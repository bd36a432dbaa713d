package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	coordinationv1 "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/rest"
)

// LeaseName is the Lease the Berth replicas of a namespace elect on.
const LeaseName = "berth-leader"

const namespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// ForEnvironment returns Always on one machine, and when Berth runs in a
// Pod (in-cluster configuration) an Elector on the Lease LeaseName in the
// Pod's namespace, named by the Pod (its hostname), that takes part until
// ctx ends; done is closed once it has (and a leader has released the
// Lease). Its ServiceAccount needs get, create and update on Leases.
func ForEnvironment(ctx context.Context, log *slog.Logger) (c Checker, done <-chan struct{}, err error) {
	e, err := forEnvironment(ctx, log)
	if e == nil || err != nil {
		closed := make(chan struct{})
		close(closed)
		if err == nil {
			return Always, closed, nil
		}
		return nil, closed, err
	}
	return e, e.Done(), nil
}

func forEnvironment(ctx context.Context, log *slog.Logger) (*Elector, error) {
	cfg, err := rest.InClusterConfig()
	if errors.Is(err, rest.ErrNotInCluster) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("leader: %w", err)
	}
	ns, err := os.ReadFile(namespaceFile)
	if err != nil {
		return nil, fmt.Errorf("leader: the Pod's namespace: %w", err)
	}
	id, err := os.Hostname()
	if err != nil {
		return nil, fmt.Errorf("leader: the Pod's name: %w", err)
	}
	kc, err := coordinationv1.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("leader: %w", err)
	}
	return Elect(ctx, Options{Client: kc, Namespace: strings.TrimSpace(string(ns)), Name: LeaseName, Identity: id, Logger: log})
}

// ForConfig returns an Elector on the Lease LeaseName in namespace ns of
// the API server of cfg, for Berth replicas that share their sandboxes
// wherever they run (in a Pod or not: `berth up --state kube` on hosts).
// Its identity is the host's name, the process id and instance (the data
// directory's), so that two processes on one host differ.
func ForConfig(ctx context.Context, cfg *rest.Config, ns, instance string, log *slog.Logger) (*Elector, error) {
	host, err := os.Hostname()
	if err != nil {
		return nil, fmt.Errorf("leader: the host's name: %w", err)
	}
	kc, err := coordinationv1.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("leader: %w", err)
	}
	id := fmt.Sprintf("%s-%d-%s", host, os.Getpid(), instance)
	return Elect(ctx, Options{Client: kc, Namespace: ns, Name: LeaseName, Identity: id, Logger: log})
}
