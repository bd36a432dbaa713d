package image

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/berth-dev/berth/internal/archive"
)

// unpackImage applies the layers, in order, to a new root in tmp, fixes it
// up for read-only use and reads its config. The caller renames the root
// into place.
func (s *Store) unpackImage(ctx context.Context, ref, hex string, cfg *v1.ConfigFile, descs []layerDesc, report func(Progress)) (*Image, error) {
	dir := filepath.Join(s.dir, "tmp", hex+".rootfs")
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	defer root.Close()
	u := &unpacker{root: root, shift: s.o.IDShift, keep: s.o.KeepOwner, dirs: map[string]*tar.Header{}, open: map[string]*os.Root{}}
	defer u.closeDirs()
	for i, d := range descs {
		report(Progress{Layer: d.digest.String(), Status: "unpacking", Total: d.size})
		if err := u.applyBlob(ctx, s.blobPath(d.digest.Hex)); err != nil {
			return nil, fmt.Errorf("image: %s: layer %d (%s): %w", ref, i, d.digest, err)
		}
		report(Progress{Layer: d.digest.String(), Status: "unpacked", Done: d.size, Total: d.size})
	}
	if err := u.finish(); err != nil {
		return nil, fmt.Errorf("image: %s: %w", ref, err)
	}
	c := configOf(cfg)
	if err := fixups(root, c.WorkingDir, s.o.IDShift, s.o.KeepOwner); err != nil {
		return nil, fmt.Errorf("image: %s: preparing the root: %w", ref, err)
	}
	if err := resolveUser(root, &c); err != nil {
		return nil, fmt.Errorf("image: %s: %w", ref, err)
	}
	size, err := diskUsage(dir)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	now := time.Now().UTC()
	return &Image{Ref: ref, Refs: []string{ref}, Digest: "sha256:" + hex, Size: size, Config: c, Pulled: now, LastUsed: now}, nil
}

// unpacker applies layer tars to a root, every write through os.Root.
type unpacker struct {
	root  *os.Root
	shift uint32
	keep  bool                   // Options.KeepOwner
	dirs  map[string]*tar.Header // directory modes and times, applied last
	open  map[string]*os.Root    // open directories, by path (see parent)
	layer map[string]bool        // paths the current layer wrote (opaque dirs)
}

// entryError names the tar entry a layer failed on.
type entryError struct {
	name string
	err  error
}

func (e *entryError) Error() string { return fmt.Sprintf("entry %q: %v", e.name, e.err) }
func (e *entryError) Unwrap() error { return e.err }

func (u *unpacker) applyBlob(ctx context.Context, blob string) error {
	f, err := os.Open(blob)
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := decompress(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return err
	}
	defer r.Close()
	ra := newReadAhead(r)
	defer ra.Close() // before r.Close: the goroutine reads r
	u.layer = map[string]bool{}
	var opaque []string
	tr := tar.NewReader(ra)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading the layer: %w", err)
		}
		name, err := cleanName(h.Name)
		if err != nil {
			return &entryError{h.Name, err}
		}
		base, dir := path.Base(name), path.Dir(name)
		switch {
		case name == ".":
		case base == ".wh..wh..opq":
			// Applied after the layer: the marker may follow the layer's own entries.
			opaque = append(opaque, dir)
		case strings.HasPrefix(base, ".wh."):
			err = u.whiteout(path.Join(dir, strings.TrimPrefix(base, ".wh.")))
		default:
			err = u.entry(h, name, tr)
		}
		if err != nil {
			return &entryError{h.Name, err}
		}
	}
	for _, d := range opaque {
		if err := u.clearLower(d); err != nil {
			return &entryError{path.Join(d, ".wh..wh..opq"), err}
		}
	}
	return nil
}

func decompress(r *bufio.Reader) (io.ReadCloser, error) {
	magic, err := r.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		return gzip.NewReader(r)
	case len(magic) >= 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd:
		z, err := zstd.NewReader(r)
		if err != nil {
			return nil, err
		}
		return z.IOReadCloser(), nil
	}
	return io.NopCloser(r), nil
}

// cleanName makes a tar name relative to the root ("." for the root),
// by the rules of uploaded archives (archive.EntryName): no absolute
// names, no "..".
func cleanName(n string) (string, error) {
	c, err := archive.EntryName(n)
	if c == "" && err == nil {
		c = "."
	}
	return c, err
}

func (u *unpacker) whiteout(target string) error {
	u.closeDirs()
	if err := u.root.RemoveAll(target); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	u.forget(target)
	return nil
}

// forget drops deferred directory metadata at and under p.
func (u *unpacker) forget(p string) {
	for k := range u.dirs {
		if k == p || strings.HasPrefix(k, p+"/") {
			delete(u.dirs, k)
		}
	}
}

func (u *unpacker) entry(h *tar.Header, name string, r io.Reader) error {
	var err error
	switch h.Typeflag {
	case tar.TypeDir:
		err = u.dir(h, name)
	case tar.TypeReg: // archive/tar turns old TypeRegA entries into TypeReg
		err = u.file(h, name, r)
	case tar.TypeSymlink:
		err = u.symlink(h, name)
	case tar.TypeLink:
		err = u.link(h, name)
	default:
		return nil // devices and FIFOs: the sandbox brings its own /dev
	}
	if err != nil {
		return err
	}
	for p := name; p != "." && p != "/"; p = path.Dir(p) {
		u.layer[p] = true
	}
	return nil
}

// parent opens (and caches) the directory that will hold an entry,
// creating it if missing. Entries are then written with single-name
// operations in it, which spares os.Root a walk from the top per call.
func (u *unpacker) parent(name string) (*os.Root, string, error) {
	dir, base := path.Dir(name), path.Base(name)
	if dir == "." {
		return u.root, base, nil
	}
	if r, ok := u.open[dir]; ok {
		return r, base, nil
	}
	r, err := u.root.OpenRoot(dir)
	if err != nil {
		r, err = u.openInRoot(dir)
	}
	if err != nil {
		return nil, "", err
	}
	if len(u.open) >= 1024 {
		u.closeDirs()
	}
	u.open[dir] = r
	return r, base, nil
}

// openInRoot opens directory dir of the image, creating what is missing,
// with its symbolic links followed inside the image as a chroot would (an
// absolute target starts again at the image's root, ".." stops there), the
// way Docker applies layers: a Debian image's var/run -> /run takes a later
// layer's var/run/x as run/x. Nothing can land outside the root.
func (u *unpacker) openInRoot(dir string) (*os.Root, error) {
	real, err := u.resolve(dir)
	if err != nil {
		return nil, err
	}
	r, err := u.root.OpenRoot(real)
	if errors.Is(err, fs.ErrNotExist) {
		if err = u.parents(path.Join(real, "x")); err == nil {
			r, err = u.root.OpenRoot(real)
		}
	}
	return r, err
}

// maxLinks bounds the symbolic links followed for one path (Linux: 40).
const maxLinks = 40

// resolve returns p with every symbolic link in it replaced by its
// target, inside the image; a missing component is kept as it is.
func (u *unpacker) resolve(p string) (string, error) {
	var done []string
	todo := strings.Split(p, "/")
	for links := 0; len(todo) > 0; {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(done) > 0 {
				done = done[:len(done)-1]
			}
			continue
		}
		cur := path.Join(append(done, c)...)
		fi, err := u.root.Lstat(cur)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			done = append(done, c)
			continue
		}
		if links++; links > maxLinks {
			return "", fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		target, err := u.root.Readlink(cur)
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			done = done[:0]
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	if len(done) == 0 {
		return ".", nil
	}
	return path.Join(done...), nil
}

// closeDirs forgets the open directories (after anything was removed, a
// cached handle may name a directory no longer in the tree).
func (u *unpacker) closeDirs() {
	for k, r := range u.open {
		r.Close()
		delete(u.open, k)
	}
}

// replace makes way for a new entry at name: what is there is removed
// unless both are directories. It returns the directory to write in and
// the entry's name in it.
func (u *unpacker) replace(name string, isDir bool) (*os.Root, string, error) {
	pr, base, err := u.parent(name)
	if err != nil {
		return nil, "", err
	}
	fi, err := pr.Lstat(base)
	if errors.Is(err, fs.ErrNotExist) {
		return pr, base, nil
	}
	if err != nil {
		return nil, "", err
	}
	if isDir && fi.IsDir() {
		return pr, base, nil
	}
	u.forget(name)
	if err := pr.RemoveAll(base); err != nil {
		return nil, "", err
	}
	if fi.IsDir() {
		u.closeDirs()
		return u.parent(name)
	}
	return pr, base, nil
}

// parents creates the missing parents of name, owned by the image's root
// (shifted): a layer that names a/b/c without a and a/b gets directories
// an image user's root owns, as Docker's do, never files of host root
// (which an idmapped mount of the root would show as nobody's).
func (u *unpacker) parents(name string) error {
	dir := path.Dir(name)
	if dir == "." {
		return nil
	}
	parts := strings.Split(dir, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		if _, err := u.root.Lstat(p); err == nil {
			continue
		}
		if err := u.root.Mkdir(p, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if err := u.lchown(u.root, p, int(u.shift), int(u.shift)); err != nil {
			return err
		}
	}
	return nil
}

func (u *unpacker) dir(h *tar.Header, name string) error {
	pr, base, err := u.replace(name, true)
	if err != nil {
		return err
	}
	if err := pr.Mkdir(base, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if err := u.lchown(pr, base, int(u.id(h.Uid)), int(u.id(h.Gid))); err != nil {
		return err
	}
	u.dirs[name] = h
	return nil
}

func (u *unpacker) file(h *tar.Header, name string, r io.Reader) error {
	pr, base, err := u.replace(name, false)
	if err != nil {
		return err
	}
	f, err := pr.OpenFile(base, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if err == nil && !u.keep {
		err = f.Chown(int(u.id(h.Uid)), int(u.id(h.Gid)))
	}
	if err == nil { // after chown, which would clear setuid anyway: we strip it
		err = f.Chmod(mode(h))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return pr.Chtimes(base, h.ModTime, h.ModTime)
}

func (u *unpacker) symlink(h *tar.Header, name string) error {
	pr, base, err := u.replace(name, false)
	if err != nil {
		return err
	}
	if err := pr.Symlink(h.Linkname, base); err != nil {
		return err
	}
	return u.lchown(pr, base, int(u.id(h.Uid)), int(u.id(h.Gid)))
}

// lchown gives a file its (shifted) owner, unless the store keeps its
// own (Options.KeepOwner).
func (u *unpacker) lchown(r *os.Root, name string, uid, gid int) error {
	if u.keep {
		return nil
	}
	return r.Lchown(name, uid, gid)
}

func (u *unpacker) link(h *tar.Header, name string) error {
	target, err := cleanName(h.Linkname)
	if err != nil {
		return fmt.Errorf("hard link target %q: %w", h.Linkname, err)
	}
	if _, _, err := u.replace(name, false); err != nil {
		return err
	}
	if err := u.root.Link(target, name); err != nil {
		return fmt.Errorf("hard link to %q: %w", h.Linkname, err)
	}
	return nil
}

// mode keeps the permission bits and the sticky bit; setuid and setgid
// are stripped.
func mode(h *tar.Header) os.FileMode {
	m := os.FileMode(h.Mode & 0o777)
	if h.Mode&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return m
}

func (u *unpacker) id(n int) uint32 {
	v := int64(n) + int64(u.shift)
	if n < 0 || v >= math.MaxUint32 {
		return math.MaxUint32 - 1 // nobody's; cannot be a real owner
	}
	return uint32(v)
}

// clearLower removes what lower layers put under d, keeping what the
// current layer wrote.
func (u *unpacker) clearLower(d string) error {
	f, err := u.root.Open(d)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	ents, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, e := range ents {
		p := path.Join(d, e.Name())
		if u.layer[p] {
			if e.IsDir() {
				if err := u.clearLower(p); err != nil {
					return err
				}
			}
			continue
		}
		u.closeDirs()
		if err := u.root.RemoveAll(p); err != nil {
			return err
		}
		u.forget(p)
	}
	return nil
}

// finish applies directory modes and times, deepest first.
func (u *unpacker) finish() error {
	names := make([]string, 0, len(u.dirs))
	for n := range u.dirs {
		names = append(names, n)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(names)))
	for _, n := range names {
		if fi, err := u.root.Lstat(n); err != nil || !fi.IsDir() {
			continue
		}
		h := u.dirs[n]
		if err := u.root.Chmod(n, mode(h)|os.ModeDir); err != nil {
			return err
		}
		if err := u.root.Chtimes(n, h.ModTime, h.ModTime); err != nil {
			return err
		}
	}
	return nil
}

// diskUsage is the space dir takes, each inode counted once.
func diskUsage(dir string) (int64, error) {
	seen := map[uint64]bool{}
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			total += fi.Size()
			return nil
		}
		if seen[st.Ino] {
			return nil
		}
		seen[st.Ino] = true
		total += st.Blocks * 512
		return nil
	})
	return total, err
}
