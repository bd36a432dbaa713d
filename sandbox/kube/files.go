package kube

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/sandbox"
)

// The caller's files (Spec.Files) are trees on Berth's host: the driver
// copies each into Secrets of the sandbox (FilesChunkBytes of file data at
// most each, deleted with the sandbox) and mounts them, projected into one
// read-only volume, at the tree's target. The files are root's, readable
// by the code's uid (every reader's), executable where the owner could
// execute them: what the local drivers give the code's uid, which there
// owns them, on a read-only bind. The volume holds the regular files (and
// symbolic links to files inside the tree, as copies); empty directories
// are not kept.

// Limits of the caller's files on Kubernetes: a Secret holds at most
// 1 MiB, and the files of every Pod start pass through the API server.
const (
	FilesChunkBytes = 768 << 10
	FilesMaxBytes   = 64 << 20
)

// fileSet is one tree of Files, cut into Secrets.
type fileSet struct {
	target  string
	secrets []*corev1.Secret
	items   [][]corev1.KeyToPath // per secret
}

// readFiles reads the spec's trees into the Secrets of sandbox b (names
// b.name-files-N), not yet created.
func (r *Runtime) readFiles(spec sandbox.Spec, b *box, labels map[string]string) ([]fileSet, error) {
	var sets []fileSet
	total, n := int64(0), 0
	for _, f := range spec.Files {
		if !filepath.IsAbs(f.Dir) || !path.IsAbs(f.Target) || path.Clean(f.Target) != f.Target || f.Target == "/" {
			return nil, fmt.Errorf("kube: files %q at %q: not absolute paths", f.Dir, f.Target)
		}
		if reserved(f.Target) {
			return nil, fmt.Errorf("kube: files at %s: the path is the sandbox's own", f.Target)
		}
		set := fileSet{target: f.Target}
		newSecret := func() {
			set.secrets = append(set.secrets, &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-files-%d", b.name, n), Namespace: r.o.Namespace, Labels: labels},
				Type:       corev1.SecretTypeOpaque,
				Data:       map[string][]byte{},
			})
			set.items = append(set.items, nil)
			n++
		}
		size := int64(FilesChunkBytes) // no Secret yet
		err := walkFiles(f.Dir, func(rel string, data []byte, mode fs.FileMode) error {
			if total += int64(len(data)); total > FilesMaxBytes {
				return fmt.Errorf("more than %d MiB of files", FilesMaxBytes>>20)
			}
			if len(data) > FilesChunkBytes {
				return fmt.Errorf("%s: %d bytes, above the %d KiB a file may have on Kubernetes", rel, len(data), FilesChunkBytes>>10)
			}
			if size+int64(len(data)) > FilesChunkBytes {
				newSecret()
				size = 0
			}
			size += int64(len(data))
			i := len(set.secrets) - 1
			key := fmt.Sprintf("f%d", len(set.items[i]))
			set.secrets[i].Data[key] = data
			set.items[i] = append(set.items[i], corev1.KeyToPath{Key: key, Path: rel, Mode: ptr(fileMode(mode))})
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("kube: files for %s: %w", f.Target, err)
		}
		sets = append(sets, set)
	}
	return sets, nil
}

// fileMode is a file's mode in the sandbox: readable by all, executable by
// all if its owner may execute it.
func fileMode(m fs.FileMode) int32 {
	if m&0o100 != 0 {
		return 0o555
	}
	return 0o444
}

// walkFiles calls fn for each regular file of dir (and each symbolic link
// to one inside dir), with its path relative to dir.
func walkFiles(dir string, fn func(rel string, data []byte, mode fs.FileMode) error) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	return fs.WalkDir(root.FS(), ".", func(rel string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if strings.HasPrefix(rel, "..") {
			return fmt.Errorf("%s: a name starting with \"..\" cannot be mounted", rel)
		}
		if !d.Type().IsRegular() && d.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		info, err := root.Stat(rel) // through a link, inside dir only
		if err != nil {
			if d.Type()&fs.ModeSymlink != 0 {
				return nil // a link out of the tree, or dangling
			}
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		data, err := root.ReadFile(rel)
		if err != nil {
			return err
		}
		return fn(rel, data, info.Mode())
	})
}

// createFiles creates the Secrets of sets.
func (r *Runtime) createFiles(ctx context.Context, sets []fileSet) error {
	for _, set := range sets {
		for _, s := range set.secrets {
			if _, err := r.cs.CoreV1().Secrets(r.o.Namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
				return capacityError("the Secret of the files for "+set.target, err)
			}
		}
	}
	return nil
}

// filesMounts are the Pod's volumes and the main container's mounts of sets.
func filesMounts(sets []fileSet) ([]corev1.Volume, []corev1.VolumeMount) {
	var vols []corev1.Volume
	var mounts []corev1.VolumeMount
	for i, set := range sets {
		n := fmt.Sprintf("files-%d", i)
		src := corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}
		if len(set.secrets) > 0 {
			p := &corev1.ProjectedVolumeSource{DefaultMode: ptr(int32(0o444))}
			for j, s := range set.secrets {
				p.Sources = append(p.Sources, corev1.VolumeProjection{Secret: &corev1.SecretProjection{
					LocalObjectReference: corev1.LocalObjectReference{Name: s.Name}, Items: set.items[j],
				}})
			}
			src = corev1.VolumeSource{Projected: p}
		}
		vols = append(vols, corev1.Volume{Name: n, VolumeSource: src})
		mounts = append(mounts, corev1.VolumeMount{Name: n, MountPath: set.target, ReadOnly: true})
	}
	return vols, mounts
}
