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

	corev1 "k8s.io/api/core/v1"
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
		case reserved(v.Path):
			return fmt.Errorf("kube: volume %s: %s is the sandbox's own", v.Name, v.Path)
		case seen[v.Name]:
			return fmt.Errorf("kube: volume %s named twice", v.Name)
		}
		seen[v.Name] = true
	}
	return nil
}

// ensureVolumes finds (or makes) the spec's claims and returns their
// names by volume name.
func (r *Runtime) ensureVolumes(ctx context.Context, spec sandbox.Spec) (map[string]string, error) {
	names := map[string]string{}
	for _, v := range spec.Volumes {
		n, err := r.ensureClaim(ctx, spec, v.Name)
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		names[v.Name] = n
	}
	return names, nil
}

// ensureClaim returns the name of the group's live claim for volume name,
// made if there is none. A claim's name has a random suffix: one that
// RemoveVolumes deleted lives on (Terminating) while a Pod still uses it,
// and the group's next sandbox gets a new, empty one meanwhile. Of claims
// that sandboxes starting at once made, all take the oldest, and each
// deletes its own if that is not it.
func (r *Runtime) ensureClaim(ctx context.Context, spec sandbox.Spec, name string) (string, error) {
	claims := r.cs.CoreV1().PersistentVolumeClaims(r.o.Namespace)
	sel := metav1.ListOptions{LabelSelector: r.groupSelector(spec.Group) + "," + LabelVolume + "=" + name}
	if n, err := liveClaim(ctx, claims, sel); n != "" || err != nil {
		return n, err
	}
	made, err := claims.Create(ctx, r.claim(spec, name), metav1.CreateOptions{})
	if err != nil {
		return "", capacityError("the volume's claim", err)
	}
	n, err := liveClaim(ctx, claims, sel)
	if err != nil {
		return "", err
	}
	if n != made.Name {
		_ = claims.Delete(ctx, made.Name, metav1.DeleteOptions{})
	}
	return n, nil
}

// liveClaim is the oldest claim of sel not being deleted, or "".
func liveClaim(ctx context.Context, claims claimLister, sel metav1.ListOptions) (string, error) {
	list, err := claims.List(ctx, sel)
	if err != nil {
		return "", err
	}
	var best *corev1.PersistentVolumeClaim
	for i := range list.Items {
		c := &list.Items[i]
		if c.DeletionTimestamp != nil {
			continue
		}
		if best == nil || c.CreationTimestamp.Before(&best.CreationTimestamp) ||
			(c.CreationTimestamp.Equal(&best.CreationTimestamp) && c.Name < best.Name) {
			best = c
		}
	}
	if best == nil {
		return "", nil
	}
	return best.Name, nil
}

type claimLister interface {
	List(ctx context.Context, opts metav1.ListOptions) (*corev1.PersistentVolumeClaimList, error)
}

func (r *Runtime) groupSelector(group string) string {
	return LabelManagedBy + "=" + managedBy + "," + LabelInstance + "=" + r.o.Instance + "," + LabelGroup + "=" + r.groupHash(group)
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
		ObjectMeta: metav1.ObjectMeta{GenerateName: "berth-vol-" + r.groupHash(spec.Group)[:12] + "-" + name[:min(len(name), 30)] + "-",
			Namespace: r.o.Namespace,
			Labels:    labels, Annotations: map[string]string{annotationGroup: spec.Group}},
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
func volumeMounts(spec sandbox.Spec, claims map[string]string) ([]corev1.Volume, []corev1.VolumeMount) {
	var vols []corev1.Volume
	var mounts []corev1.VolumeMount
	for i, v := range spec.Volumes {
		n := fmt.Sprintf("vol-%d", i)
		vols = append(vols, corev1.Volume{Name: n, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claims[v.Name]},
		}})
		mounts = append(mounts, corev1.VolumeMount{Name: n, MountPath: v.Path})
	}
	return vols, mounts
}

// RemoveVolumes implements sandbox.Runtime: it deletes group's claims. A
// claim goes once no Pod uses it, and its volume with it (as the
// StorageClass's reclaim policy says); the group's next sandbox gets new
// ones.
func (r *Runtime) RemoveVolumes(ctx context.Context, group string) error {
	claims := r.cs.CoreV1().PersistentVolumeClaims(r.o.Namespace)
	list, err := claims.List(ctx, metav1.ListOptions{LabelSelector: r.groupSelector(group)})
	if err != nil {
		return fmt.Errorf("kube: volumes of %s: %w", group, err)
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
	return nil
}

// reserved reports whether p is, or is under, a path that the Pod's own
// mounts hold (the agent's, the workspace, /tmp) or the kernel's.
func reserved(p string) bool {
	for _, r := range []string{"/.berth", workspace, "/tmp", "/proc", "/sys", "/dev"} {
		if p == r || strings.HasPrefix(p, r+"/") {
			return true
		}
	}
	return false
}
