// Package staticimage builds single-layer linux/amd64 OCI images from a few
// files (static binaries) on an empty base, without Docker, and pushes them
// to a registry. The test cluster's pause image and Berth's own image are
// built with it.
package staticimage

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/internal/imagebuild"
)

// File is one file of the image.
type File struct {
	// Path is the absolute path in the image ("/berth").
	Path string
	// Source is the host file to copy; Data is used when Source is empty.
	Source string
	Data   []byte
	// Mode is the file's permission bits (0o755 if zero).
	Mode int64
}

// Options describe an image.
type Options struct {
	Files []File
	// Entrypoint and Cmd of the image's config.
	Entrypoint, Cmd []string
	Env             []string
	// User is the config's user ("" = root; "65534" = nobody).
	User string
	// Labels of the image's config.
	Labels map[string]string
}

// Build returns the image. Timestamps are fixed (the Unix epoch), so the
// same files give the same digest.
func Build(o Options) (v1.Image, error) {
	if len(o.Files) == 0 {
		return nil, fmt.Errorf("staticimage: no files")
	}
	layerTar, err := tarFiles(o.Files)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	return imagebuild.OnEmptyBase(layer, v1.Config{Entrypoint: o.Entrypoint, Cmd: o.Cmd, Env: o.Env, User: o.User, Labels: o.Labels}, time.Time{})
}

func tarFiles(files []File) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	sorted := append([]File(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	for _, f := range sorted {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path {
			return nil, fmt.Errorf("staticimage: path %q must be absolute and clean", f.Path)
		}
		data := f.Data
		if f.Source != "" {
			var err error
			if data, err = os.ReadFile(f.Source); err != nil {
				return nil, err
			}
		}
		if err := writeDirs(tw, dirs, path.Dir(f.Path)); err != nil {
			return nil, err
		}
		mode := f.Mode
		if mode == 0 {
			mode = 0o755
		}
		hdr := &tar.Header{Name: strings.TrimPrefix(f.Path, "/"), Mode: mode, Size: int64(len(data)),
			Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeDirs(tw *tar.Writer, done map[string]bool, dir string) error {
	if dir == "/" || done[dir] {
		return nil
	}
	if err := writeDirs(tw, done, path.Dir(dir)); err != nil {
		return err
	}
	done[dir] = true
	return tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(dir, "/") + "/", Mode: 0o755,
		Typeflag: tar.TypeDir, ModTime: time.Unix(0, 0)})
}

// Push writes img to ref ("127.0.0.1:5000/berth:dev") over plain HTTP (the
// registry is on loopback) and returns its digest.
func Push(ctx context.Context, img v1.Image, ref string) (v1.Hash, error) {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.Write(r, img, remote.WithContext(ctx)); err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", ref, err)
	}
	return img.Digest()
}
