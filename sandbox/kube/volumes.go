package kube

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/sandbox"
)

// Named volumes (Spec.Volumes) are PersistentVolumeClaims: one per
// (instance, group, volume name), made from Options.StorageClass on first
// use, kept when the group's sandboxes go (Cleanup leaves them alone), and
// deleted by RemoveVolumes. Every sandbox of the kube driver runs its code
// as one uid (Options.UID, or the image's user), so a group's sandboxes
// share their volumes' files; the agent, still root, hands each volume's
// top directory to that uid before it drops to it (berth-agent --own).

// Labels and annotations of a volume's claim.
const (
	// LabelGroup is a hash of the instance and the group (a group's name
	// has slashes, which no label value may hold).
	LabelGroup      = "berth.dev/group-hash"
	LabelVolume     = "berth.dev/volume"
	annotationGroup = "berth.dev/group"
)

var (
	groupRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9/-]{0,100}$`)
	volumeRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// groupHash names group's claims (with the instance's name in it: two
// Berth instances in a namespace keep their volumes apart).
func (r *Runtime) groupHash(group string) string {
	h := sha256.Sum256([]byte(r.o.Instance + "\x00" + group))
	return hex.EncodeToString(h[:])[:40]
}

// claimName is the name of group's claim for volume name.
func (r *Runtime) claimName(group, name string) string {
	return "berth-vol-" + r.groupHash(group)[:16] + "-" + name
}

// checkVolumes refuses volumes the driver cannot make.
func checkVolumes(spec sandbox.Spec) error {
	if len(spec.Volumes) == 0 {
		return nil
	}
	if !groupRE.MatchString(spec.Group) || strings.Contains(spec.Group, "//") || strings.HasSuffix(spec.Group, "/") {
		return fmt.Errorf("kube: volumes need a group made of [a-z0-9/-], not %q", spec.Group)
	}
	seen := map[string]bool{}
	for _, v := range spec.Volumes {
		switch {
		case !volumeRE.MatchString(v.Name):
			return fmt.Errorf("kube: volume %q: want [a-z0-9-], at most 63 characters", v.Name)
		case !path.IsAbs(v.Path) || path.Clean(v.Path) != v.Path || v.Path == "/":
			return fmt.Errorf("kube: volume %s: path %q is not a clean absolute path", v.Name, v.Path)
		case seen[v.Name]:
			return fmt.Errorf("kube: volume %s named twice", v.Name)
		}
		seen[v.Name] = true
	}
	return nil
}

// ensureVolumes makes the spec's claims that do not exist yet.
func (r *Runtime) ensureVolumes(ctx context.Context, spec sandbox.Spec) error {
	for _, v := range spec.Volumes {
		if err := r.ensureClaim(ctx, spec, v.Name); err != nil {
			return fmt.Errorf("kube: volume %s: %w", v.Name, err)
		}
	}
	return nil
}

func (r *Runtime) ensureClaim(ctx context.Context, spec sandbox.Spec, name string) error {
	claims := r.cs.CoreV1().PersistentVolumeClaims(r.o.Namespace)
	cn := r.claimName(spec.Group, name)
	for {
		c, err := claims.Get(ctx, cn, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = claims.Create(ctx, r.claim(spec, name), metav1.CreateOptions{})
			if err == nil || !apierrors.IsAlreadyExists(err) {
				return err
			}
			continue // another sandbox of the group made it meanwhile
		case err != nil:
			return err
		case c.DeletionTimestamp == nil:
			return nil
		}
		// Being removed (RemoveVolumes of a moment ago): a new one follows.
		select {
		case <-ctx.Done():
			return fmt.Errorf("claim %s is still being deleted: %w", cn, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// claim is group's PersistentVolumeClaim for volume name.
func (r *Runtime) claim(spec sandbox.Spec, name string) *corev1.PersistentVolumeClaim {
	labels := map[string]string{LabelManagedBy: managedBy, LabelInstance: r.o.Instance,
		LabelGroup: r.groupHash(spec.Group), LabelVolume: name}
	for k, v := range r.labels(spec) {
		if k == LabelOwnerKind || k == LabelOwnerName {
			labels[k] = v
		}
	}
	var class *string
	if r.o.StorageClass != "" {
		class = &r.o.StorageClass
	}
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: r.claimName(spec.Group, name), Namespace: r.o.Namespace,
			Labels: labels, Annotations: map[string]string{annotationGroup: spec.Group}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{r.o.VolumeAccessMode},
			StorageClassName: class,
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceStorage: *resource.NewQuantity(r.o.VolumeBytes, resource.BinarySI),
			}},
		},
	}
}

// volumeMounts are the Pod's volumes and the main container's mounts of
// the spec's claims.
func (r *Runtime) volumeMounts(spec sandbox.Spec) ([]corev1.Volume, []corev1.VolumeMount) {
	var vols []corev1.Volume
	var mounts []corev1.VolumeMount
	for i, v := range spec.Volumes {
		n := fmt.Sprintf("vol-%d", i)
		vols = append(vols, corev1.Volume{Name: n, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: r.claimName(spec.Group, v.Name)},
		}})
		mounts = append(mounts, corev1.VolumeMount{Name: n, MountPath: v.Path})
	}
	return vols, mounts
}

// RemoveVolumes implements sandbox.Runtime: it deletes group's claims and
// waits (within ctx) until they are gone: a claim goes once no Pod uses
// it, and its volume with it (the StorageClass's reclaim policy).
func (r *Runtime) RemoveVolumes(ctx context.Context, group string) error {
	claims := r.cs.CoreV1().PersistentVolumeClaims(r.o.Namespace)
	sel := metav1.ListOptions{LabelSelector: LabelManagedBy + "=" + managedBy + "," + LabelInstance + "=" + r.o.Instance +
		"," + LabelGroup + "=" + r.groupHash(group)}
	for {
		list, err := claims.List(ctx, sel)
		if err != nil {
			return fmt.Errorf("kube: volumes of %s: %w", group, err)
		}
		if len(list.Items) == 0 {
			return nil
		}
		var errs []error
		for _, c := range list.Items {
			if c.DeletionTimestamp == nil {
				errs = append(errs, ignoreNotFound(claims.Delete(ctx, c.Name, metav1.DeleteOptions{})))
			}
		}
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("kube: volumes of %s: %w", group, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube: volumes of %s still in use: %w", group, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
