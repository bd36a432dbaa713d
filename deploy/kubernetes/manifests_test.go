// Package manifests_test applies the install manifests to the test cluster
// (server-side apply) and checks the least-privilege RBAC they grant.
package manifests_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/berth-dev/berth/internal/kubetest"
)

// readManifests returns the objects of every *.yaml file in this directory.
func readManifests(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	var objs []*unstructured.Unstructured
	for _, f := range files {
		if f == "kustomization.yaml" { // kubectl apply -k's, not an object
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
		for {
			var raw json.RawMessage
			if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(raw) == 0 || string(raw) == "null" {
				continue
			}
			o := &unstructured.Unstructured{}
			if err := o.UnmarshalJSON(raw); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			objs = append(objs, o)
		}
	}
	return objs
}

func TestManifestsKinds(t *testing.T) {
	kinds := map[string]int{}
	for _, o := range readManifests(t) {
		kinds[o.GetKind()]++
		if o.GetKind() == "ClusterRole" || o.GetKind() == "ClusterRoleBinding" {
			t.Errorf("%s %s: Berth needs no cluster-wide rights", o.GetKind(), o.GetName())
		}
		if o.GetKind() == "Deployment" {
			n, _, _ := unstructured.NestedInt64(o.Object, "spec", "replicas")
			if n != 2 {
				t.Errorf("Deployment replicas = %d, want 2", n)
			}
		}
	}
	for _, k := range []string{"Namespace", "ServiceAccount", "Role", "RoleBinding", "Deployment", "Service"} {
		if kinds[k] != 1 {
			t.Errorf("%d objects of kind %s, want 1", kinds[k], k)
		}
	}
}

// The manifests apply server-side (the Namespace, Deployment and Service in
// dry-run; the ServiceAccount and RBAC for real, in a test namespace), and
// the ServiceAccount gets what Berth needs in its namespace and nothing else.
func TestManifestsApply(t *testing.T) {
	k := kubetest.Cluster(t)
	ns := k.Namespace(t, "deploy")
	ctx := context.Background()
	groups, err := restmapper.GetAPIGroupResources(k.Client.Discovery())
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDiscoveryRESTMapper(groups)
	dyn, err := dynamic.NewForConfig(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range readManifests(t) {
		apply(t, ctx, dyn, mapper, ns, o)
	}
	sa := "system:serviceaccount:" + ns + ":berth"
	tests := []struct {
		ns, group, resource, sub, verb string
		want                           bool
	}{
		{ns, "", "pods", "", "create", true},
		{ns, "", "pods", "", "watch", true},
		{ns, "", "pods", "", "update", true},
		{ns, "", "pods", "", "patch", false},
		{ns, "", "pods", "status", "patch", false},
		{ns, "", "services", "", "create", false},
		{ns, "", "persistentvolumeclaims", "", "create", true},
		{ns, "", "secrets", "", "get", true},
		{ns, "", "configmaps", "", "update", true},
		{ns, "", "configmaps", "", "delete", false},
		{ns, "networking.k8s.io", "networkpolicies", "", "create", true},
		{ns, "coordination.k8s.io", "leases", "", "update", true},
		{ns, "", "events", "", "create", true},
		{ns, "berth.dev", "sessionpools", "", "create", true},
		{ns, "berth.dev", "apps", "status", "update", true},
		{ns, "berth.dev", "sessionpools", "", "watch", true},
		{ns, "coordination.k8s.io", "leases", "", "delete", false},
		{ns, "", "pods", "exec", "create", false},
		{ns, "rbac.authorization.k8s.io", "roles", "", "create", false},
		{ns, "apps", "deployments", "", "create", false},
		{"default", "", "pods", "", "list", false},
		{"kube-system", "", "secrets", "", "get", false},
		{"", "", "pods", "", "list", false},
		{"", "", "nodes", "", "get", false},
		{"", "", "namespaces", "", "create", false},
	}
	for _, tt := range tests {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: sa, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: tt.ns, Group: tt.group,
				Resource: tt.resource, Subresource: tt.sub, Verb: tt.verb},
		}}
		got, err := k.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Status.Allowed != tt.want {
			t.Errorf("%s %s %s/%s in %q: allowed = %v, want %v", sa, tt.verb, tt.resource, tt.sub, tt.ns,
				got.Status.Allowed, tt.want)
		}
	}
}

// apply applies o server-side: into the test namespace ns, for real for
// the ServiceAccount and RBAC, in dry-run for everything else.
func apply(t *testing.T, ctx context.Context, dyn dynamic.Interface, mapper meta.RESTMapper, ns string,
	o *unstructured.Unstructured) {
	t.Helper()
	gvk := o.GroupVersionKind()
	m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		t.Fatalf("%s: %v", gvk, err)
	}
	var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		o.SetNamespace(ns)
		ri = dyn.Resource(m.Resource).Namespace(ns)
	}
	if o.GetKind() == "RoleBinding" {
		subjects, _, _ := unstructured.NestedSlice(o.Object, "subjects")
		for _, s := range subjects {
			s.(map[string]any)["namespace"] = ns
		}
		_ = unstructured.SetNestedSlice(o.Object, subjects, "subjects")
	}
	opts := metav1.ApplyOptions{FieldManager: "berth-manifests-test", Force: true}
	switch o.GetKind() {
	case "ServiceAccount", "Role", "RoleBinding":
	default:
		opts.DryRun = []string{metav1.DryRunAll}
	}
	got, err := ri.Apply(ctx, o.GetName(), o, opts)
	if err != nil {
		t.Fatalf("apply %s %s: %v", o.GetKind(), o.GetName(), err)
	}
	if got.GetUID() == "" {
		t.Errorf("apply %s %s: no object came back", o.GetKind(), o.GetName())
	}
}
