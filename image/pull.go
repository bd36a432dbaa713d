package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

// Platform is the only platform Berth runs.
var Platform = v1.Platform{OS: "linux", Architecture: "amd64"}

// PullOptions are per-pull settings; the zero value means defaults.
type PullOptions struct {
	// Auth, if set, is the registry login for this pull; otherwise the
	// store's Credentials are asked, and then the pull is anonymous.
	Auth *Auth
	// Progress, if set, is told how each layer's download goes. Calls are
	// serialized.
	Progress func(Progress)
}

// Auth is a registry user and password.
type Auth struct {
	User     string `json:"username"`
	Password string `json:"password"`
}

// Progress is one step of a layer's download.
type Progress struct {
	// Layer is the blob's digest.
	Layer string `json:"layer"`
	// Status is "downloading", "downloaded", "cached" (already in the
	// store), "unpacking" or "unpacked".
	Status string `json:"status"`
	Done   int64  `json:"done"`
	Total  int64  `json:"total"`
}

// Pull resolves ref (a tag is resolved to a digest), downloads what the
// store lacks, unpacks the image once and returns it. An index resolves to
// its linux/amd64 image.
func (s *Store) Pull(ctx context.Context, ref string, po PullOptions) (*Image, error) {
	t0 := time.Now()
	r, err := s.parse(ref)
	if err != nil {
		return nil, err
	}
	if d, ok := r.(name.Digest); ok { // a digest held here needs no registry
		if hex, err := digestHex(d.DigestStr()); err == nil {
			if _, err := s.readMeta(hex); err == nil {
				return s.touch(hex, r.Name())
			}
		}
	}
	opts, err := s.remoteOptions(ctx, r, po)
	if err != nil {
		return nil, err
	}
	desc, err := remote.Get(r, opts...)
	if err != nil {
		return nil, s.registryError(r, err)
	}
	img, err := desc.Image()
	if err != nil {
		return nil, fmt.Errorf("image: %s: no %s image in it: %w", ref, Platform, err)
	}
	return s.install(ctx, r.Name(), img, po.Progress, t0)
}

func (s *Store) parse(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref, name.WeakValidation)
	if err != nil {
		return nil, fmt.Errorf("image: bad reference %q: %w", ref, err)
	}
	if s.insecure(r.Context().RegistryStr()) {
		r, err = name.ParseReference(ref, name.WeakValidation, name.Insecure)
		if err != nil {
			return nil, fmt.Errorf("image: bad reference %q: %w", ref, err)
		}
	}
	return r, nil
}

func (s *Store) insecure(host string) bool {
	h := host
	if i := strings.LastIndexByte(host, ':'); i > 0 && !strings.HasSuffix(host, "]") {
		h = host[:i]
	}
	for _, x := range s.o.Insecure {
		if x == host || x == h {
			return true
		}
	}
	return false
}

func (s *Store) registryError(r name.Reference, err error) error {
	host := r.Context().RegistryStr()
	msg := err.Error()
	if !s.insecure(host) && (strings.Contains(msg, "server gave HTTP response to HTTPS client") || strings.Contains(msg, "first record does not look like a TLS handshake")) {
		return fmt.Errorf("image: %s: registry %s answers plain HTTP; Berth uses HTTPS unless the registry is named with --insecure-registry %s: %w", r, host, host, err)
	}
	return fmt.Errorf("image: %s: %w", r, err)
}

func (s *Store) remoteOptions(ctx context.Context, r name.Reference, po PullOptions) ([]remote.Option, error) {
	host := r.Context().RegistryStr()
	auth := authn.Anonymous
	if po.Auth != nil {
		auth = authn.FromConfig(authn.AuthConfig{Username: po.Auth.User, Password: po.Auth.Password})
	} else if s.o.Credentials != nil {
		u, p, ok, err := s.o.Credentials.RegistryCredential(ctx, host)
		if err != nil {
			return nil, fmt.Errorf("image: credentials for %s: %w", host, err)
		}
		if ok {
			auth = authn.FromConfig(authn.AuthConfig{Username: u, Password: p})
		}
	}
	base := http.DefaultTransport.(*http.Transport).Clone()
	if s.o.RootCAs != nil {
		base.TLSClientConfig.RootCAs = s.o.RootCAs
	}
	return []remote.Option{
		remote.WithContext(ctx), remote.WithAuth(auth), remote.WithPlatform(Platform),
		remote.WithTransport(&schemeGuard{base: base, insecure: s.insecure}),
	}, nil
}

// schemeGuard sends every request over HTTPS unless its host is named
// insecure. go-containerregistry itself would speak plain HTTP to loopback
// and private addresses.
type schemeGuard struct {
	base     http.RoundTripper
	insecure func(host string) bool
}

func (g *schemeGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !g.insecure(req.URL.Host) {
		req = req.Clone(req.Context())
		req.URL.Scheme = "https"
	}
	return g.base.RoundTrip(req)
}

// Load imports the linux/amd64 image of the OCI image layout in dir under
// ref (e.g. "berth.local/python:1"), as if it had been pulled.
func (s *Store) Load(ctx context.Context, dir, ref string) (*Image, error) {
	t0 := time.Now()
	r, err := s.parse(ref)
	if err != nil {
		return nil, err
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("image: %s is not an OCI image layout: %w", dir, err)
	}
	img, err := pickImage(idx, 0)
	if err != nil {
		return nil, fmt.Errorf("image: %s: %w", dir, err)
	}
	return s.install(ctx, r.Name(), img, nil, t0)
}

// pickImage finds the linux/amd64 image (or the only image) in an index.
func pickImage(idx v1.ImageIndex, depth int) (v1.Image, error) {
	if depth > 4 {
		return nil, errors.New("indexes nested too deep")
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, d := range im.Manifests {
		if d.Platform != nil && !d.Platform.Satisfies(Platform) {
			continue
		}
		switch {
		case d.MediaType.IsImage():
			return idx.Image(d.Digest)
		case d.MediaType.IsIndex():
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, err
			}
			if img, err := pickImage(child, depth+1); err == nil {
				return img, nil
			}
		}
	}
	return nil, fmt.Errorf("no %s image in it", Platform)
}

// install makes img present in the store: once per digest, whatever the
// number of concurrent callers, in this process or others.
func (s *Store) install(ctx context.Context, ref string, img v1.Image, progress func(Progress), t0 time.Time) (*Image, error) {
	dg, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("image: %s: %w", ref, err)
	}
	hex := dg.Hex
	if _, err := s.readMeta(hex); err == nil {
		return s.touch(hex, ref)
	}
	_, err, _ = s.flight.Do(hex, func() (any, error) {
		return nil, s.installLocked(ctx, ref, hex, img, progress, t0)
	})
	if err != nil {
		return nil, err
	}
	return s.touch(hex, ref)
}

func (s *Store) installLocked(ctx context.Context, ref, hex string, img v1.Image, progress func(Progress), t0 time.Time) error {
	l, err := lock(ctx, filepath.Join(s.dir, "locks", hex))
	if err != nil {
		return err
	}
	defer l.unlock()
	if _, err := s.readMeta(hex); err == nil {
		return nil // another process installed it while we waited
	}
	cfg, cfgDigest, err := s.saveConfig(hex, img)
	if err != nil {
		return fmt.Errorf("image: %s: %w", ref, err)
	}
	if cfg.OS != "" && (cfg.OS != Platform.OS || cfg.Architecture != Platform.Architecture) {
		return fmt.Errorf("image: %s is %s/%s; Berth runs %s images", ref, cfg.OS, cfg.Architecture, Platform)
	}
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("image: %s: %w", ref, err)
	}
	tResolve := time.Since(t0)
	report := serialize(progress)
	t1 := time.Now()
	descs, downloaded, err := s.fetchLayers(ctx, hex, layers, report)
	if err != nil {
		return fmt.Errorf("image: %s: %w", ref, err)
	}
	tDownload := time.Since(t1)
	t2 := time.Now()
	im, err := s.unpackImage(ctx, ref, hex, cfg, descs, report)
	tmpRoot := filepath.Join(s.dir, "tmp", hex+".rootfs")
	defer os.RemoveAll(tmpRoot) // a no-op once renamed into place
	if err != nil {
		return err
	}
	im.Blobs = append([]string{cfgDigest}, digests(descs)...)
	if err := s.writeMeta(hex, im); err != nil {
		return err
	}
	if err := os.Rename(tmpRoot, s.rootPath(hex)); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	s.log.Info("image pulled", "ref", ref, "digest", "sha256:"+hex, "layers", len(layers),
		"downloaded_bytes", downloaded, "size", im.Size, "resolve_ms", tResolve.Milliseconds(),
		"download_ms", tDownload.Milliseconds(), "unpack_ms", time.Since(t2).Milliseconds(),
		"total_ms", time.Since(t0).Milliseconds())
	return nil
}

func serialize(f func(Progress)) func(Progress) {
	if f == nil {
		return func(Progress) {}
	}
	var mu sync.Mutex
	return func(p Progress) {
		mu.Lock()
		defer mu.Unlock()
		f(p)
	}
}

// saveConfig stores the config blob, verified against its digest.
func (s *Store) saveConfig(owner string, img v1.Image) (*v1.ConfigFile, string, error) {
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, "", err
	}
	want, err := img.ConfigName()
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(raw)
	if got := hex.EncodeToString(sum[:]); got != want.Hex {
		return nil, "", fmt.Errorf("config blob %s does not match its digest (sha256:%s)", want, got)
	}
	cfg, err := v1.ParseConfigFile(strings.NewReader(string(raw)))
	if err != nil {
		return nil, "", fmt.Errorf("config: %w", err)
	}
	if _, err := os.Stat(s.blobPath(want.Hex)); err != nil {
		if err := writeFileAtomic(s.blobPath(want.Hex), raw, filepath.Join(s.dir, "tmp"), owner); err != nil {
			return nil, "", err
		}
	}
	return cfg, want.String(), nil
}

// layerDesc is a layer whose blob is in the store.
type layerDesc struct {
	digest v1.Hash
	size   int64
	media  types.MediaType
}

func digests(ds []layerDesc) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.digest.String()
	}
	return out
}

// fetchLayers downloads the layers the store lacks, three at a time.
func (s *Store) fetchLayers(ctx context.Context, owner string, layers []v1.Layer, report func(Progress)) ([]layerDesc, int64, error) {
	descs := make([]layerDesc, len(layers))
	var mu sync.Mutex
	var total int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(3)
	for i, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return nil, 0, err
		}
		size, err := l.Size()
		if err != nil {
			return nil, 0, err
		}
		mt, err := l.MediaType()
		if err != nil {
			return nil, 0, err
		}
		descs[i] = layerDesc{digest: d, size: size, media: mt}
		g.Go(func() error {
			n, err := s.fetchBlob(gctx, owner, l, descs[i], report)
			mu.Lock()
			total += n
			mu.Unlock()
			if err != nil {
				return fmt.Errorf("layer %d (%s): %w", i, d, err)
			}
			return nil
		})
	}
	err := g.Wait()
	return descs, total, err
}

// fetchBlob downloads one blob into tmp, checks its digest and size, and
// only then renames it into the store: a blob file in blobs/ is always whole.
func (s *Store) fetchBlob(ctx context.Context, owner string, l v1.Layer, d layerDesc, report func(Progress)) (int64, error) {
	dst := s.blobPath(d.digest.Hex)
	if fi, err := os.Stat(dst); err == nil {
		report(Progress{Layer: d.digest.String(), Status: "cached", Done: fi.Size(), Total: d.size})
		return 0, nil
	}
	if d.digest.Algorithm != "sha256" {
		return 0, fmt.Errorf("unsupported digest algorithm %q", d.digest.Algorithm)
	}
	rc, err := l.Compressed()
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	f, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), owner+".blob-")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name()) // a no-op once renamed
	h := sha256.New()
	pr := &progressReader{ctx: ctx, r: rc, report: report, p: Progress{Layer: d.digest.String(), Status: "downloading", Total: d.size}}
	n, err := io.Copy(io.MultiWriter(f, h), pr)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != d.digest.Hex || n != d.size {
		return n, fmt.Errorf("downloaded blob does not match its digest and size (got sha256:%s, %d bytes; want %s, %d bytes)", got, n, d.digest, d.size)
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return n, err
	}
	report(Progress{Layer: d.digest.String(), Status: "downloaded", Done: n, Total: d.size})
	return n, nil
}

// progressReader reports progress at most every 100 ms and stops when ctx
// ends.
type progressReader struct {
	ctx    context.Context
	r      io.Reader
	report func(Progress)
	p      Progress
	last   time.Time
}

func (p *progressReader) Read(b []byte) (int, error) {
	if err := p.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := p.r.Read(b)
	p.p.Done += int64(n)
	if now := time.Now(); now.Sub(p.last) >= 100*time.Millisecond {
		p.last = now
		p.report(p.p)
	}
	return n, err
}
