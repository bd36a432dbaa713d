package kubestore

import (
	"context"
	"fmt"
	"sort"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/berth-dev/berth/store"
)

// An App's spec is the app's document as package app encodes it
// (revisions, traffic, labels, hostnames…), without its name.

// ListApps returns every app, by name.
func (s *Store) ListApps(ctx context.Context) ([]store.App, error) {
	l, err := s.apps().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := make([]store.App, 0, len(l.Items))
	for i := range l.Items {
		a, err := appFromObject(&l.Items[i])
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func appFromObject(u *unstructured.Unstructured) (store.App, error) {
	doc, err := fromSpec(u)
	if err != nil {
		return store.App{}, fmt.Errorf("app %q: %w", u.GetName(), err)
	}
	return store.App{Name: u.GetName(), Doc: doc, CreatedAt: u.GetCreationTimestamp().UTC()}, nil
}

// UpdateApp changes an app's document, creating the App if there is none:
// fn gets the stored document (nil if none). A write that another writer
// beat (a conflict on the resourceVersion, or a Create that finds the
// object) runs fn again on the newer document.
func (s *Store) UpdateApp(ctx context.Context, name string, fn func(cur []byte) ([]byte, error)) ([]byte, error) {
	var out []byte
	err := onConflict(func() error {
		u, err := s.apps().Get(ctx, name, metav1.GetOptions{})
		var cur []byte
		switch {
		case isNotFound(err):
			u = nil
		case err != nil:
			return err
		default:
			if cur, err = fromSpec(u); err != nil {
				return err
			}
		}
		next, err := fn(cur)
		if err != nil {
			return err
		}
		sp, err := toSpec(next)
		if err != nil {
			return err
		}
		if u == nil {
			u = &unstructured.Unstructured{Object: map[string]any{"spec": sp}}
			u.SetAPIVersion(Group + "/" + Version)
			u.SetKind("App")
			u.SetName(name)
			u.SetLabels(map[string]string{LabelManagedBy: ManagedBy})
			_, err = s.apps().Create(ctx, u, metav1.CreateOptions{})
		} else {
			u.Object["spec"] = sp
			_, err = s.apps().Update(ctx, u, metav1.UpdateOptions{})
		}
		out = next
		return err
	})
	return out, err
}

// PutApp creates or replaces an app's document.
func (s *Store) PutApp(ctx context.Context, name string, doc []byte) error {
	_, err := s.UpdateApp(ctx, name, func([]byte) ([]byte, error) { return doc, nil })
	return err
}

// DeleteApp removes an app.
func (s *Store) DeleteApp(ctx context.Context, name string) error {
	err := s.apps().Delete(ctx, name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("app %q: %w", name, store.ErrNotFound)
	}
	return err
}
