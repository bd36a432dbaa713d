package server

import (
	"context"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/berth-dev/berth/app"
	"github.com/berth-dev/berth/controlplane"
	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/pool"
	"github.com/berth-dev/berth/store"
	"github.com/berth-dev/berth/store/kubestore"
)

// Where the server keeps its state (Options.State).
const (
	StateSQLite = "sqlite"
	StateKube   = "kube"
)

// KubeOptions say where the kube state lives.
type KubeOptions struct {
	// Namespace holds Berth's custom resources and Secrets (default: the
	// Pod's own namespace in a cluster, else "default").
	Namespace string
	// Kubeconfig is a kubeconfig file (default: $KUBECONFIG, else the
	// Pod's service account).
	Kubeconfig string
}

// state is everything the server keeps: SQLite in the data directory
// (package store) or the Kubernetes API (store/kubestore).
type state interface {
	pool.Store
	app.Store
	app.RegistryLogins
	controlplane.Registries
	image.Credentials
	PoolSecret(ctx context.Context, pool, name string) ([]byte, error)
	Secret(ctx context.Context, app, name string) ([]byte, error)
	Meta(ctx context.Context, k string) (string, error)
	SetMeta(ctx context.Context, k, v string) error
	Close() error
}

var (
	_ state = (*store.Store)(nil)
	_ state = (*kubestore.Store)(nil)
)

// openState opens the state o.State names.
func openState(ctx context.Context, o Options, dir string, log *slog.Logger) (state, *kubestore.Store, error) {
	switch o.State {
	case "", StateSQLite:
		st, err := store.Open(dir)
		return st, nil, err
	case StateKube:
		cfg, ns, err := kubeConfig(o.Kube)
		if err != nil {
			return nil, nil, fmt.Errorf("--state kube: %w", err)
		}
		ks, err := kubestore.New(ctx, kubestore.Options{Config: cfg, Namespace: ns, Logger: log})
		if err != nil {
			return nil, nil, err
		}
		log.Info("state in the Kubernetes API", "namespace", ns, "host", cfg.Host)
		return ks, ks, nil
	}
	return nil, nil, fmt.Errorf("--state %q: sqlite or kube", o.State)
}

// kubeConfig finds the API server: a kubeconfig file if one is named or
// in $KUBECONFIG, else the Pod's service account.
func kubeConfig(o KubeOptions) (*rest.Config, string, error) {
	path := o.Kubeconfig
	if path == "" {
		path = os.Getenv("KUBECONFIG")
	}
	if path == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, "", fmt.Errorf("no kubeconfig (--kubeconfig or $KUBECONFIG) and not in a Pod: %w", err)
		}
		ns := o.Namespace
		if ns == "" {
			b, _ := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
			ns = string(b)
		}
		return cfg, cmpOr(ns, "default"), nil
	}
	loader := &clientcmd.ClientConfigLoadingRules{ExplicitPath: path}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(loader, &clientcmd.ConfigOverrides{})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", err
	}
	ns := o.Namespace
	if ns == "" {
		ns, _, _ = cc.Namespace()
	}
	return cfg, cmpOr(ns, "default"), nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// watchState feeds changes that other replicas and kubectl make to the
// managers, until ctx is done; the returned function waits for it.
func watchState(ctx context.Context, ks *kubestore.Store, pools *pool.Manager, apps *app.Manager, log *slog.Logger) func() {
	done := make(chan struct{})
	if ks == nil {
		close(done)
		return func() { <-done }
	}
	go func() {
		defer close(done)
		err := ks.Watch(ctx, kubestore.Handler{
			Pool:     pools.Sync,
			PoolGone: func(_ context.Context, name string) { pools.Forget(name) },
			App:      apps.Sync,
			AppGone:  func(_ context.Context, name string) { apps.Forget(name) },
			Synced:   func() { log.Info("watching the cluster's pools and apps") },
		})
		if err != nil {
			log.Error("watch of the cluster's state stopped", "err", err)
		}
	}()
	return func() { <-done }
}

// sharedAdminToken makes replicas that share a kube state accept one admin
// token (the first replica's, kept in a Secret), written to the data
// directory too for the CLI; without a kube state it is token.
func sharedAdminToken(ctx context.Context, ks *kubestore.Store, token, path string) (string, error) {
	if ks == nil {
		return token, nil
	}
	shared, err := ks.SharedToken(ctx, "admin-token", token)
	if err != nil || shared == token {
		return shared, err
	}
	return shared, os.WriteFile(path, []byte(shared+"\n"), 0o600)
}

// sessionSealKey is the key MCP session ids are sealed with: derived from
// the master key with SQLite, or from a secret all replicas share (the
// first one's, kept in a Secret) with the kube state, so that any replica
// opens the ids another sealed.
func sessionSealKey(ctx context.Context, st state, ks *kubestore.Store) ([]byte, error) {
	const purpose = "berth mcp session ids v1"
	if ks == nil {
		s, ok := st.(*store.Store)
		if !ok {
			return nil, fmt.Errorf("state %T has no master key", st)
		}
		return s.DeriveKey(purpose), nil
	}
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return nil, err
	}
	shared, err := ks.SharedToken(ctx, "session-key", hex.EncodeToString(fresh))
	if err != nil {
		return nil, fmt.Errorf("the replicas' shared session key: %w", err)
	}
	return hkdf.Key(sha256.New, []byte(shared), nil, purpose, 32)
}
