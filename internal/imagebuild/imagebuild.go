// Package imagebuild turns a root file system tarball (as mmdebstrap writes
// one) into a single-layer linux/amd64 OCI image and writes it as an OCI
// image layout directory. scripts/images.sh uses it to build Berth's
// built-in environments without Docker.
package imagebuild

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Options describe one image.
type Options struct {
	// Name is the image's name, recorded as the layout's
	// org.opencontainers.image.ref.name annotation ("latest" if empty).
	Name string
	// RootfsTar is the root file system as an uncompressed tar.
	RootfsTar string
	// Out is the layout directory to create; it must not exist yet.
	Out string
	// Config is the image's runtime configuration (Env, WorkingDir, User,
	// Cmd, Labels…).
	Config v1.Config
	// Created is the image's creation time (zero: now).
	Created time.Time
}

// Result describes a written image.
type Result struct {
	Digest     v1.Hash // the manifest's
	LayerBytes int64   // the compressed layer's size
	Entries    int     // entries in the layer
}

// Build writes the image described by o. The layer keeps the tarball's
// entries (with leading "./" removed), but device nodes, sockets and FIFOs,
// which a runtime provides itself.
func Build(ctx context.Context, o Options) (Result, error) {
	if _, err := os.Stat(o.Out); err == nil {
		return Result{}, fmt.Errorf("%s already exists", o.Out)
	}
	if err := os.MkdirAll(filepath.Dir(o.Out), 0o755); err != nil {
		return Result{}, err
	}
	gz := o.Out + ".layer.tar.gz"
	defer os.Remove(gz)
	n, err := writeLayer(ctx, o.RootfsTar, gz)
	if err != nil {
		return Result{}, err
	}
	layer, err := tarball.LayerFromFile(gz, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return Result{}, fmt.Errorf("layer: %w", err)
	}
	img, err := image(layer, o)
	if err != nil {
		return Result{}, err
	}
	if err := write(img, o); err != nil {
		os.RemoveAll(o.Out)
		return Result{}, err
	}
	d, err := img.Digest()
	if err != nil {
		return Result{}, err
	}
	size, _ := layer.Size()
	return Result{Digest: d, LayerBytes: size, Entries: n}, nil
}

func image(layer v1.Layer, o Options) (v1.Image, error) {
	created := o.Created
	if created.IsZero() {
		created = time.Now().UTC().Truncate(time.Second)
	}
	return OnEmptyBase(layer, o.Config, created)
}

// OnEmptyBase is an OCI image for linux/amd64 of one layer on an empty
// base, with config cfg and, unless zero, created as its creation time.
func OnEmptyBase(layer v1.Layer, cfg v1.Config, created time.Time) (v1.Image, error) {
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config = cfg
	if !created.IsZero() {
		cf.Created = v1.Time{Time: created}
	}
	return mutate.ConfigFile(img, cf)
}

func write(img v1.Image, o Options) error {
	p, err := layout.Write(o.Out, empty.Index)
	if err != nil {
		return err
	}
	name := o.Name
	if name == "" {
		name = "latest"
	}
	return p.AppendImage(img,
		layout.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}),
		layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": name}))
}

// writeLayer copies the rootfs tarball to a gzip layer, dropping what a
// layer should not carry, and returns how many entries it kept.
func writeLayer(ctx context.Context, src, dst string) (int, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return 0, err
	}
	defer out.Close()
	zw, _ := gzip.NewWriterLevel(out, gzip.DefaultCompression)
	tw := tar.NewWriter(zw)
	n, err := copyEntries(ctx, tar.NewReader(in), tw)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", src, err)
	}
	if err := errors.Join(tw.Close(), zw.Close()); err != nil {
		return 0, err
	}
	return n, out.Close()
}

func copyEntries(ctx context.Context, tr *tar.Reader, tw *tar.Writer) (int, error) {
	n := 0
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		name, keep := layerName(h)
		if !keep {
			continue
		}
		h.Name = name
		if h.Typeflag == tar.TypeLink {
			h.Linkname = strings.TrimPrefix(path.Clean("/"+h.Linkname), "/")
		}
		if err := tw.WriteHeader(h); err != nil {
			return n, err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return n, err
		}
		n++
	}
}

// layerName returns the entry's name inside the layer, and whether the
// entry belongs there.
func layerName(h *tar.Header) (string, bool) {
	switch h.Typeflag {
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return "", false
	}
	name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
	if name == "" {
		return "", false // the root itself
	}
	if h.Typeflag == tar.TypeDir {
		name += "/"
	}
	return name, true
}

// DefaultCacheDir is where scripts/images.sh keeps the built-in images'
// OCI layouts (NAME links to the current build), outside any clone of the
// repository so that a fresh clone on the same machine reuses them.
const DefaultCacheDir = "/var/cache/berth/images"

// CacheDir is the built-in images' cache: $BERTH_IMAGE_CACHE, or
// DefaultCacheDir.
func CacheDir() string {
	if d := os.Getenv("BERTH_IMAGE_CACHE"); d != "" {
		return d
	}
	return DefaultCacheDir
}
