package kubestore

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
)

// writeBackoff paces the retries of a write that another writer beat:
// enough of them for a handful of replicas writing one object at once.
var writeBackoff = wait.Backoff{Steps: 30, Duration: 5 * time.Millisecond, Factor: 1.5, Jitter: 0.5, Cap: 500 * time.Millisecond}

// onConflict runs fn again while it fails because another writer changed
// (or created) the object first.
func onConflict(fn func() error) error {
	return retry.OnError(writeBackoff, func(err error) bool {
		return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)
	}, fn)
}

// Meta reads a value of the server's ConfigMap ("" if absent).
func (s *Store) Meta(ctx context.Context, k string) (string, error) {
	cm, err := s.kube.CoreV1().ConfigMaps(s.ns).Get(ctx, metaConfigMap, metav1.GetOptions{})
	if isNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return cm.Data[k], nil
}

// SetMeta writes a value to the server's ConfigMap.
func (s *Store) SetMeta(ctx context.Context, k, v string) error {
	cms := s.kube.CoreV1().ConfigMaps(s.ns)
	return onConflict(func() error {
		cm, err := cms.Get(ctx, metaConfigMap, metav1.GetOptions{})
		if isNotFound(err) {
			_, err = cms.Create(ctx, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: metaConfigMap, Labels: map[string]string{LabelManagedBy: ManagedBy}},
				Data:       map[string]string{k: v},
			}, metav1.CreateOptions{})
			return err
		}
		if err != nil {
			return err
		}
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[k] = v
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		return err
	})
}

// SharedToken returns the value of a token all replicas share (the control
// API's admin token): the one stored in the Secret berth-NAME, or fresh,
// stored there if there is none yet (the first replica's wins).
func (s *Store) SharedToken(ctx context.Context, name, fresh string) (string, error) {
	secrets := s.kube.CoreV1().Secrets(s.ns)
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "berth-" + name, Labels: labels("token", "", "")},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{valueField: []byte(fresh)},
	}
	if _, err := secrets.Create(ctx, sec, metav1.CreateOptions{}); err == nil {
		return fresh, nil
	} else if !apierrors.IsAlreadyExists(err) {
		return "", err
	}
	cur, err := secrets.Get(ctx, sec.Name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	return string(cur.Data[valueField]), nil
}
