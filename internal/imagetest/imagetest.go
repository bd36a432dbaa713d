// Package imagetest builds OCI images in Go, without Docker, for tests:
// layers from entries or a directory, images from layers and a config, a
// static Go program on an empty base, multi-platform indexes, and pushes
// to a registry or writes an OCI image layout.
package imagetest

import (
	"archive/tar"
	"bytes"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Entry is one tar entry of a layer.
type Entry struct {
	tar.Header
	Body []byte
}

var epoch = time.Unix(1700000000, 0)

// File is a regular file (mode 0644, owned by root).
func File(name, body string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: epoch}, Body: []byte(body)}
}

// Dir is a directory (mode 0755).
func Dir(name string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: epoch}}
}

// Symlink is a symbolic link name -> target.
func Symlink(name, target string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: epoch}}
}

// Hardlink is a hard link name -> target (a path in the image).
func Hardlink(name, target string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644, ModTime: epoch}}
}

// Whiteout deletes name from lower layers.
func Whiteout(name string) Entry {
	return File(filepath.Join(filepath.Dir(name), ".wh."+filepath.Base(name)), "")
}

// Opaque hides what lower layers have in dir.
func Opaque(dir string) Entry { return File(filepath.Join(dir, ".wh..wh..opq"), "") }

// Owned sets an entry's owner.
func Owned(e Entry, uid, gid int) Entry {
	e.Uid, e.Gid = uid, gid
	return e
}

// Mode sets an entry's mode bits.
func Mode(e Entry, mode int64) Entry {
	e.Mode = mode
	return e
}

// Files are regular files from a map, in name order.
func Files(m map[string]string) []Entry {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]Entry, 0, len(m))
	for _, n := range names {
		out = append(out, File(n, m[n]))
	}
	return out
}

// Tar writes entries, in order, as an uncompressed tar.
func Tar(t testing.TB, entries ...Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.Header
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.Body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("imagetest: %s: %v", h.Name, err)
		}
		if _, err := tw.Write(e.Body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Layer is a gzip-compressed OCI layer of entries, in order.
func Layer(t testing.TB, entries ...Entry) v1.Layer {
	t.Helper()
	b := Tar(t, entries...)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// DirLayer is a layer of a directory's contents (owned by root), placed
// under the path under ("" for the root).
func DirLayer(t testing.TB, dir, under string) v1.Layer {
	t.Helper()
	var entries []Entry
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.Join(under, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			entries = append(entries, Mode(Dir(rel), int64(fi.Mode().Perm())))
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			entries = append(entries, Symlink(rel, target))
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			entries = append(entries, Mode(File(rel, string(b)), int64(fi.Mode().Perm())))
		}
		// sockets, devices, FIFOs: not in layers built from a directory
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return Layer(t, entries...)
}

// Image is an OCI image for linux/amd64 of layers (bottom first) with cfg.
func Image(t testing.TB, cfg v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	return PlatformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"}, cfg, layers...)
}

// PlatformImage is Image for another platform.
func PlatformImage(t testing.TB, p v1.Platform, cfg v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Config = cfg
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// Index is an OCI index of images, each with its config's platform.
func Index(t testing.TB, imgs ...v1.Image) v1.ImageIndex {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, img := range imgs {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}}})
	}
	return idx
}

// GoBinary builds a static Go program from the source of its main package.
func GoBinary(t testing.TB, mainGo string) []byte {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(mainGo), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module imagetestprog\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", "prog", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("imagetest: go build: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "prog"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// GoImage is a static Go program at /prog on an empty base, run as cfg
// says (Entrypoint defaults to /prog).
func GoImage(t testing.TB, mainGo string, cfg v1.Config) v1.Image {
	t.Helper()
	bin := GoBinary(t, mainGo)
	if len(cfg.Entrypoint) == 0 {
		cfg.Entrypoint = []string{"/prog"}
	}
	e := File("prog", string(bin))
	e.Mode = 0o755
	return Image(t, cfg, Layer(t, e, File("etc/passwd", "root:x:0:0:root:/root:/prog\napp:x:1000:1000:app:/home/app:/prog\n"),
		File("etc/group", "root:x:0:\napp:x:1000:\n"), Owned(Dir("home/app"), 1000, 1000)))
}

// Push writes an image or index to ref (plain HTTP to a loopback
// registry; pass remote.WithTransport for another), with opts (e.g.
// BasicAuth).
func Push(t testing.TB, ref string, img any, opts ...remote.Option) v1.Hash {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	var d v1.Hash
	switch x := img.(type) {
	case v1.Image:
		err = remote.Write(r, x, opts...)
		if err == nil {
			d, err = x.Digest()
		}
	case v1.ImageIndex:
		err = remote.WriteIndex(r, x, opts...)
		if err == nil {
			d, err = x.Digest()
		}
	default:
		t.Fatalf("imagetest: cannot push %T", img)
	}
	if err != nil {
		t.Fatalf("imagetest: push %s: %v", ref, err)
	}
	return d
}

// BasicAuth is a push option with a registry login.
func BasicAuth(user, password string) remote.Option {
	return remote.WithAuth(&authn.Basic{Username: user, Password: password})
}

// WriteLayout writes img as an OCI image layout in dir.
func WriteLayout(t testing.TB, dir string, img v1.Image) {
	t.Helper()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
}

// HTTPS is a push option for a TLS registry: t (e.g. the registry's
// Client().Transport) with every request sent over HTTPS.
func HTTPS(t http.RoundTripper) remote.Option {
	return remote.WithTransport(roundTripFunc(func(r *http.Request) (*http.Response, error) {
		r = r.Clone(r.Context())
		r.URL.Scheme = "https"
		return t.RoundTrip(r)
	}))
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
