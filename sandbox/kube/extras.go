package kube

import (
	"context"
	"errors"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/sandbox"
)

// extras are what a Spec adds to a sandbox's Pod beyond the agent: its
// named volumes, the caller's files, its image's pull Secret.
type extras struct {
	volumes     []corev1.Volume
	mounts      []corev1.VolumeMount
	pullSecrets []corev1.LocalObjectReference
	// own are the directories the agent hands to the code's uid.
	own []string
}

// extras makes the objects the spec's extras need (the claims, the
// Secrets of the files and the pull login), and says what the Pod adds.
func (r *Runtime) extras(ctx context.Context, spec sandbox.Spec, b *box, labels map[string]string) (extras, error) {
	var ex extras
	claims, err := r.ensureVolumes(ctx, spec)
	if err != nil {
		return ex, err
	}
	vols, mounts := volumeMounts(spec, claims)
	for _, v := range spec.Volumes {
		ex.own = append(ex.own, v.Path)
	}
	sets, err := r.readFiles(spec, b, labels)
	if err != nil {
		return ex, err
	}
	if err := r.createFiles(ctx, sets); err != nil {
		return ex, err
	}
	fv, fm := filesMounts(sets)
	ex.volumes, ex.mounts = append(vols, fv...), append(mounts, fm...)
	ps, err := r.pullSecret(ctx, spec, b, labels)
	if err != nil {
		return ex, err
	}
	if ps != nil {
		if _, err := r.cs.CoreV1().Secrets(r.o.Namespace).Create(ctx, ps, metav1.CreateOptions{}); err != nil {
			return ex, capacityError("the image's pull Secret", err)
		}
		ex.pullSecrets = []corev1.LocalObjectReference{{Name: ps.Name}}
	}
	return ex, nil
}

// DeleteObjects deletes what a sandbox has besides its Pod (its Secrets:
// the agent's, the files', the pull login's; its NetworkPolicy), for a
// caller that deleted or released the Pod itself (package kubepool).
func (r *Runtime) DeleteObjects(ctx context.Context, id string) error {
	return errors.Join(
		ignoreNotFound(r.cs.NetworkingV1().NetworkPolicies(r.o.Namespace).Delete(ctx, podName(id), metav1.DeleteOptions{})),
		r.deleteExtras(ctx, id))
}

// deleteExtras deletes the sandbox's Secrets (the files', the pull
// login's; the agent's too).
func (r *Runtime) deleteExtras(ctx context.Context, id string) error {
	sel := LabelManagedBy + "=" + managedBy + "," + LabelInstance + "=" + r.o.Instance + "," + LabelSandbox + "=" + id
	return ignoreNotFound(r.cs.CoreV1().Secrets(r.o.Namespace).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: sel}))
}
