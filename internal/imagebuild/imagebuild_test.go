package imagebuild_test

import (
	"archive/tar"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/internal/imagebuild"
)

// TestBuild writes a layout from a tarball shaped like mmdebstrap's and
// reads it back with go-containerregistry.
func TestBuild(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "rootfs.tar")
	writeTar(t, src, []tar.Header{
		{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./usr/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./usr/bin/hello", Typeflag: tar.TypeReg, Mode: 0o755, Size: 5},
		{Name: "./usr/bin/hi", Typeflag: tar.TypeLink, Linkname: "./usr/bin/hello"},
		{Name: "./bin", Typeflag: tar.TypeSymlink, Linkname: "usr/bin"},
		{Name: "./dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3},
		{Name: "./mnt/data/", Typeflag: tar.TypeDir, Mode: 0o755, Uid: 1000, Gid: 1000},
	})
	out := filepath.Join(dir, "layout")
	cfg := v1.Config{Env: []string{"PATH=/usr/bin", "MPLBACKEND=Agg"}, WorkingDir: "/mnt/data", User: "1000:1000", Cmd: []string{"/bin/bash"}}
	r, err := imagebuild.Build(context.Background(), imagebuild.Options{Name: "berth-test", RootfsTar: src, Out: out, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if r.Entries != 5 {
		t.Errorf("%d entries, want 5 (all but the root and the device node)", r.Entries)
	}
	if _, err := imagebuild.Build(context.Background(), imagebuild.Options{RootfsTar: src, Out: out}); err == nil {
		t.Error("a second build into the same directory succeeded")
	}

	idx, err := layout.ImageIndexFromPath(out)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) != 1 {
		t.Fatalf("index: %v %+v", err, im)
	}
	desc := im.Manifests[0]
	if desc.Digest != r.Digest || desc.MediaType != types.OCIManifestSchema1 ||
		desc.Platform == nil || desc.Platform.Architecture != "amd64" ||
		desc.Annotations["org.opencontainers.image.ref.name"] != "berth-test" {
		t.Fatalf("descriptor %+v", desc)
	}
	img, err := idx.Image(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || cf.Config.User != "1000:1000" || cf.Config.WorkingDir != "/mnt/data" ||
		!slices.Equal(cf.Config.Env, cfg.Env) || len(cf.RootFS.DiffIDs) != 1 {
		t.Fatalf("config %+v", cf)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %v %d", err, len(layers))
	}
	if mt, _ := layers[0].MediaType(); mt != types.OCILayer {
		t.Errorf("layer media type %s", mt)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var names []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name+"|"+h.Linkname)
	}
	want := []string{"usr/|", "usr/bin/hello|", "usr/bin/hi|usr/bin/hello", "bin|usr/bin", "mnt/data/|"}
	if !slices.Equal(names, want) {
		t.Fatalf("layer entries %q, want %q", names, want)
	}
}

func TestBuildBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.tar")
	if err := os.WriteFile(bad, []byte("not a tarball, certainly not 512 bytes of one"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{bad, filepath.Join(dir, "missing.tar")} {
		out := filepath.Join(dir, "out-"+filepath.Base(src))
		if _, err := imagebuild.Build(context.Background(), imagebuild.Options{RootfsTar: src, Out: out}); err == nil {
			t.Errorf("%s: no error", src)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%s: a layout was left behind", src)
		}
	}
}

func writeTar(t *testing.T, path string, hs []tar.Header) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, h := range hs {
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			_, _ = tw.Write([]byte("hello")[:h.Size])
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}
