// Package apiservertest starts a bare Kubernetes control plane for a test
// (package kubeapitest: one etcd and one kube-apiserver on loopback ports
// of their own, no kubelet, no controllers), stopped at the test's end.
// That is enough for objects that need nobody to act on them: Leases,
// Secrets, custom resources, and Pods (which stay Pending).
//
// Tests that call Start are skipped, with a message, when the binaries
// are missing, unless kubeapitest.Required: then they fail.
package apiservertest

import (
	"context"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/berth-dev/berth/internal/kubeapitest"
)

// Server is a running etcd + kube-apiserver.
type Server struct {
	Config *rest.Config
	Client kubernetes.Interface
}

// Start starts etcd and kube-apiserver for t.
func Start(t testing.TB) *Server {
	t.Helper()
	bins, err := kubeapitest.Bins()
	if err != nil {
		if kubeapitest.Required() {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	api, err := kubeapitest.Start(ctx, bins, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(api.Stop)
	client, err := kubernetes.NewForConfig(api.Config)
	if err != nil {
		t.Fatal(err)
	}
	return &Server{Config: api.Config, Client: client}
}
