// Package image is Berth's image store: it pulls OCI and Docker images from
// registries (or loads OCI image layouts), keeps their blobs verified
// against their digests, and unpacks each image once into a read-only root
// file system shared by every sandbox that runs it.
//
// The store lives in one directory (DATADIR/images):
//
//	blobs/sha256/HEX   compressed layers and configs, each verified before it is renamed into place
//	rootfs/sha256/HEX  one unpacked root per image manifest digest
//	meta/sha256/HEX    what the store knows of that image (refs, config, layers, size, last use)
//	locks/HEX          per-digest file locks (pulls in other processes)
//	tmp/               downloads and unpacks in progress; emptied by Open
//
// Unpacking is written through os.Root, so no layer entry can write outside
// the root: entries with "../" or absolute names, writes through symlinks
// that leave the root, and hard links to outside make the pull fail with an
// error naming the layer and the entry. Device nodes and FIFOs are skipped,
// setuid and setgid bits are stripped, extended attributes (file
// capabilities included) are ignored, and every owner is shifted by
// Options.IDShift so image users never own files as host users.
package image

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// ErrNotFound is returned by Get for an image the store does not hold.
var ErrNotFound = errors.New("image not found")

// Credentials finds the stored login for a registry host (host[:port]).
type Credentials interface {
	RegistryCredential(ctx context.Context, host string) (user, password string, ok bool, err error)
}

// Options configure a Store; the zero value means defaults.
type Options struct {
	// IDShift is added to every uid and gid of unpacked files.
	IDShift uint32
	// KeepOwner leaves unpacked files owned by Berth's own user (no
	// chown): for a Berth that is not root, whose sandboxes are Pods that
	// pull images themselves (--runtime kube), so that a root here only
	// tells an image's configuration and files.
	KeepOwner bool
	// Insecure names registry hosts (host or host:port) reached over plain
	// HTTP; every other registry is reached over HTTPS.
	Insecure []string
	// RootCAs verify registries' certificates (nil: the system roots).
	RootCAs *x509.CertPool
	// Credentials, if set, is asked for a registry's login when a pull
	// brings none.
	Credentials Credentials
	Logger      *slog.Logger
}

// Store holds pulled images. It is safe for concurrent use, also by several
// processes sharing one directory.
type Store struct {
	dir    string
	o      Options
	log    *slog.Logger
	flight singleflight.Group
	metaMu sync.Mutex // meta files: read-modify-write of refs and last use
}

// Image is an unpacked image.
type Image struct {
	// Ref is the reference the image was last pulled or loaded as.
	Ref string `json:"ref"`
	// Refs are all references pointing at this image.
	Refs []string `json:"refs,omitempty"`
	// Digest is the image manifest's digest (sha256:…).
	Digest string `json:"digest"`
	// RootFS is the unpacked root; never write to it.
	RootFS string `json:"rootfs"`
	// Size is the root's size on disk, in bytes.
	Size     int64     `json:"size"`
	Config   Config    `json:"config"`
	Pulled   time.Time `json:"pulled"`
	LastUsed time.Time `json:"lastUsed"`
	// Blobs are the digests of the config and layers (for Prune).
	Blobs []string `json:"blobs"`
}

// Config is what the image says about how to run it.
type Config struct {
	Entrypoint   []string `json:"entrypoint,omitempty"`
	Cmd          []string `json:"cmd,omitempty"`
	Env          []string `json:"env,omitempty"`
	WorkingDir   string   `json:"workingDir,omitempty"`
	User         string   `json:"user,omitempty"`
	ExposedPorts []int    `json:"exposedPorts,omitempty"`
	// UID and GID are User resolved through the image's /etc/passwd and
	// /etc/group (image ids, before IDShift); Home is the user's home.
	UID  uint32 `json:"uid"`
	GID  uint32 `json:"gid"`
	Home string `json:"home,omitempty"`
}

// Open opens (creating if needed) the store in dir and removes what an
// interrupted pull left behind.
func Open(dir string, o Options) (*Store, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := &Store{dir: dir, o: o, log: o.Logger}
	for _, d := range []string{"blobs/sha256", "rootfs/sha256", "meta/sha256", "locks", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
	}
	// Sandboxes running as unprivileged uids must reach the roots.
	for _, d := range []string{"", "rootfs", "rootfs/sha256"} {
		if err := os.Chmod(filepath.Join(dir, d), 0o711); err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
	}
	if err := s.cleanup(); err != nil {
		return nil, err
	}
	return s, nil
}

// cleanup removes temporary files whose owner is gone, and metadata of
// images whose root is missing. A pull in progress in another process holds
// its tmp entries under a lock (tmp/NAME.lock), so they are left alone.
func (s *Store) cleanup() error {
	tmp := filepath.Join(s.dir, "tmp")
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	for _, e := range ents {
		hex := strings.SplitN(e.Name(), ".", 2)[0]
		l, ok, err := tryLock(filepath.Join(s.dir, "locks", hex))
		if err != nil {
			return err
		}
		if !ok {
			continue // a live pull of this digest owns it
		}
		err = os.RemoveAll(filepath.Join(tmp, e.Name()))
		l.unlock()
		if err != nil {
			return fmt.Errorf("image: cleaning %s: %w", e.Name(), err)
		}
		s.log.Info("image: removed an interrupted pull's leftovers", "path", e.Name())
	}
	metas, _ := os.ReadDir(filepath.Join(s.dir, "meta/sha256"))
	for _, m := range metas {
		if _, err := os.Stat(filepath.Join(s.dir, "rootfs/sha256", m.Name())); errors.Is(err, fs.ErrNotExist) {
			_ = os.Remove(filepath.Join(s.dir, "meta/sha256", m.Name()))
		}
	}
	return nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) rootPath(hex string) string { return filepath.Join(s.dir, "rootfs/sha256", hex) }
func (s *Store) metaPath(hex string) string { return filepath.Join(s.dir, "meta/sha256", hex) }
func (s *Store) blobPath(hex string) string { return filepath.Join(s.dir, "blobs/sha256", hex) }

// digestHex checks a sha256 digest and returns its hex part.
func digestHex(d string) (string, error) {
	hex, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hex) != 64 || strings.Trim(hex, "0123456789abcdef") != "" {
		return "", fmt.Errorf("image: %q is not a sha256 digest", d)
	}
	return hex, nil
}

// Get returns the image with this manifest digest, if the store holds it.
func (s *Store) Get(digest string) (*Image, error) {
	hex, err := digestHex(digest)
	if err != nil {
		return nil, err
	}
	return s.readMeta(hex)
}

func (s *Store) readMeta(hex string) (*Image, error) {
	if _, err := os.Stat(s.rootPath(hex)); err != nil {
		return nil, fmt.Errorf("%w: sha256:%s", ErrNotFound, hex)
	}
	b, err := os.ReadFile(s.metaPath(hex))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: sha256:%s", ErrNotFound, hex)
	}
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	var im Image
	if err := json.Unmarshal(b, &im); err != nil {
		return nil, fmt.Errorf("image: metadata of sha256:%s: %w", hex, err)
	}
	im.RootFS = s.rootPath(hex)
	return &im, nil
}

func (s *Store) writeMeta(hex string, im *Image) error {
	b, err := json.MarshalIndent(im, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(s.metaPath(hex), b, filepath.Join(s.dir, "tmp"), hex)
}

// writeFileAtomic writes b to a temp file named after hex (so cleanup can
// tell whose it is) and renames it to path.
func writeFileAtomic(path string, b []byte, tmpDir, hex string) error {
	f, err := os.CreateTemp(tmpDir, hex+".meta-*")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// List returns the images in the store, most recently used first.
func (s *Store) List() ([]*Image, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, "meta/sha256"))
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	var out []*Image
	for _, e := range ents {
		im, err := s.readMeta(e.Name())
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, im)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LastUsed.After(out[j].LastUsed) })
	return out, nil
}

// touch records a use of an image under ref and moves ref away from any
// other image.
func (s *Store) touch(hex, ref string) (*Image, error) {
	s.metaMu.Lock()
	defer s.metaMu.Unlock()
	im, err := s.readMeta(hex)
	if err != nil {
		return nil, err
	}
	im.LastUsed = time.Now().UTC()
	if ref != "" {
		im.Ref = ref
		if !contains(im.Refs, ref) {
			im.Refs = append(im.Refs, ref)
			sort.Strings(im.Refs)
		}
		if err := s.dropRef(hex, ref); err != nil {
			return nil, err
		}
	}
	return im, s.writeMeta(hex, im)
}

// dropRef removes ref from every image but keep.
func (s *Store) dropRef(keep, ref string) error {
	ents, _ := os.ReadDir(filepath.Join(s.dir, "meta/sha256"))
	for _, e := range ents {
		if e.Name() == keep {
			continue
		}
		im, err := s.readMeta(e.Name())
		if err != nil || !contains(im.Refs, ref) {
			continue
		}
		im.Refs = remove(im.Refs, ref)
		if im.Ref == ref {
			im.Ref = ""
			if len(im.Refs) > 0 {
				im.Ref = im.Refs[0]
			}
		}
		if err := s.writeMeta(e.Name(), im); err != nil {
			return err
		}
	}
	return nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func remove(l []string, s string) []string {
	out := l[:0]
	for _, x := range l {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}
