// Package kubestore keeps Berth's state in the Kubernetes API, for Berth
// replicas that share one cluster: pools and apps are custom resources
// (berth.dev/v1 SessionPool and App: spec is what the user set, status the
// conditions Berth observed), pools' keys, pools' and apps' secrets and
// registry logins are Secrets (owned by their resource where they have
// one), and the server's few meta values a ConfigMap. Every change is an
// Update that carries the object's resourceVersion and is retried on
// conflict, so two replicas never lose each other's writes; Watch feeds
// changes made by another replica or by kubectl apply back to the
// managers.
//
// In its namespace Berth needs: sessionpools and apps (get, list, watch,
// create, update, delete) and their status (update); secrets (get, list,
// watch, create, update, delete, deletecollection); configmaps (get,
// create, update); events (create). Nothing cluster-wide: the CRDs
// (deploy/kubernetes/crds) are installed by whoever installs Berth.
package kubestore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Group and version of Berth's custom resources.
const (
	Group   = "berth.dev"
	Version = "v1"
)

// Kinds and their resources.
var (
	PoolResource = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "sessionpools"}
	AppResource  = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "apps"}
)

// Labels and annotations on what Berth writes.
const (
	LabelManagedBy  = "app.kubernetes.io/managed-by"
	ManagedBy       = "berth"
	LabelRole       = "berth.dev/role"
	LabelOwnerKind  = "berth.dev/owner-kind"
	LabelOwnerName  = "berth.dev/owner-name"
	AnnotSecretName = "berth.dev/secret-name"
	AnnotRegistry   = "berth.dev/registry-host"
	AnnotUsername   = "berth.dev/username"
	AnnotUpdatedAt  = "berth.dev/updated-at"
	AnnotKeyByBerth = "berth.dev/key-by-berth"
	metaConfigMap   = "berth-meta"
	keyField        = "key"
	passwordField   = "password"
	valueField      = "value"
)

// Roles of Berth's Secrets (LabelRole).
const (
	RolePoolKey     = "pool-key"
	RoleSecret      = "secret"
	RoleRegistry    = "registry"
	RoleAppRegistry = "app-registry"
)

// Options configure a Store.
type Options struct {
	// Config reaches the API server (rest.InClusterConfig in a Pod).
	Config *rest.Config
	// Namespace holds every object Berth writes.
	Namespace string
	Logger    *slog.Logger
}

// Store is the Kubernetes backend of Berth's state. It is safe for
// concurrent use.
type Store struct {
	dyn  dynamic.Interface
	kube kubernetes.Interface
	ns   string
	log  *slog.Logger
}

// New returns a store in o.Namespace; it checks that the custom resources
// are installed.
func New(ctx context.Context, o Options) (*Store, error) {
	if o.Namespace == "" {
		return nil, errors.New("kubestore: no namespace")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	dyn, err := dynamic.NewForConfig(o.Config)
	if err != nil {
		return nil, err
	}
	kube, err := kubernetes.NewForConfig(o.Config)
	if err != nil {
		return nil, err
	}
	s := &Store{dyn: dyn, kube: kube, ns: o.Namespace, log: o.Logger}
	for _, r := range []schema.GroupVersionResource{PoolResource, AppResource} {
		if _, err := s.dyn.Resource(r).Namespace(s.ns).List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
			return nil, fmt.Errorf("kubestore: list %s in namespace %s (are the CRDs of deploy/kubernetes/crds applied?): %w", r.Resource, s.ns, err)
		}
	}
	return s, nil
}

// Close releases nothing: the store holds no connection of its own.
func (s *Store) Close() error { return nil }

func (s *Store) pools() dynamic.ResourceInterface {
	return s.dyn.Resource(PoolResource).Namespace(s.ns)
}
func (s *Store) apps() dynamic.ResourceInterface { return s.dyn.Resource(AppResource).Namespace(s.ns) }

// objectName is a Kubernetes name for a Berth name that may be longer or
// use characters a name cannot: PREFIX-HASH.
func objectName(prefix string, parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return prefix + "-" + hex.EncodeToString(h.Sum(nil))[:16]
}

func labels(role, ownerKind, ownerName string) map[string]string {
	l := map[string]string{LabelManagedBy: ManagedBy, LabelRole: role}
	if ownerKind != "" {
		l[LabelOwnerKind], l[LabelOwnerName] = ownerKind, ownerName
	}
	return l
}

func selector(role, ownerKind, ownerName string) string {
	sel := LabelManagedBy + "=" + ManagedBy + "," + LabelRole + "=" + role
	if ownerKind != "" {
		sel += "," + LabelOwnerKind + "=" + ownerKind + "," + LabelOwnerName + "=" + ownerName
	}
	return sel
}

// ownerRef points a Secret at the resource it belongs to, so that the
// cluster's garbage collector removes it with it; nil if the resource does
// not exist (yet).
func (s *Store) ownerRef(ctx context.Context, kind, name string) []metav1.OwnerReference {
	ri, k := s.pools(), "SessionPool"
	if kind == "app" {
		ri, k = s.apps(), "App"
	}
	u, err := ri.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return []metav1.OwnerReference{{APIVersion: Group + "/" + Version, Kind: k, Name: name, UID: u.GetUID()}}
}

func now() string { return time.Now().UTC().Format(time.RFC3339Nano) }

func isNotFound(err error) bool { return apierrors.IsNotFound(err) }

// spec returns an object's spec (empty if it has none).
func spec(u *unstructured.Unstructured) map[string]any {
	m, _, _ := unstructured.NestedMap(u.Object, "spec")
	if m == nil {
		m = map[string]any{}
	}
	return m
}
