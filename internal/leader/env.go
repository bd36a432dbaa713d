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
