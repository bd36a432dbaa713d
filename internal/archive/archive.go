// Package archive packs a directory into a gzipped tar and unpacks one
// that nobody vouched for. Unpack writes through an os.Root, so no entry
// lands outside the target: names with ".." or a leading "/" are refused,
// symlinks are created as links and never followed out of the root, hard
// links must name an earlier file of the archive, and devices, FIFOs and
// setuid, setgid or sticky bits are refused. Image layers (package image)
// share the name rules, EntryName; the app uploads of the CLI's --dir
// use all of them.
package archive

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// Limits bound what an archive may unpack to; zero fields take defaults.
type Limits struct {
	// MaxBytes bounds the sum of the regular files' sizes (default 8 GiB).
	MaxBytes int64
	// MaxEntries bounds the number of entries (default 1,000,000).
	MaxEntries int
}

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = 8 << 30
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = 1_000_000
	}
	return l
}

// Stats describe an archive's content.
type Stats struct {
	Entries int
	Bytes   int64 // of regular files
}

// Error is an archive that is refused; its message says which entry and
// why.
type Error struct {
	Name   string
	Reason string
}

func (e *Error) Error() string {
	if e.Name == "" {
		return "archive refused: " + e.Reason
	}
	return fmt.Sprintf("archive refused: entry %q: %s", e.Name, e.Reason)
}

func refuse(name, format string, a ...any) error {
	return &Error{Name: name, Reason: fmt.Sprintf(format, a...)}
}

// EntryName checks a tar entry's name (or a hard link's target) and
// returns it clean and relative, "" for the root itself. It refuses empty,
// absolute and overlong names, NUL bytes and any ".." component. Both the
// uploads unpacked here and image layers (package image) take names by
// these rules.
func EntryName(name string) (string, error) {
	if name == "" {
		return "", errors.New("empty name")
	}
	if strings.HasPrefix(name, "/") {
		return "", errors.New("absolute name")
	}
	if strings.ContainsRune(name, 0) || len(name) > 4096 {
		return "", errors.New("unusable name")
	}
	for _, part := range strings.Split(strings.TrimSuffix(name, "/"), "/") {
		if part == ".." {
			return "", errors.New("name leaves the archive's root (..)")
		}
	}
	clean := path.Clean(name)
	if clean == "." {
		return "", nil
	}
	return clean, nil
}

// entryName is EntryName with its refusal as an *Error.
func entryName(name string) (string, error) {
	clean, err := EntryName(name)
	if err != nil {
		return "", refuse(name, "%s", err.Error())
	}
	return clean, nil
}

// checkHeader applies the rules every entry must meet.
func checkHeader(h *tar.Header) (string, error) {
	name, err := entryName(h.Name)
	if err != nil {
		return "", err
	}
	if h.Mode&0o7000 != 0 {
		return "", refuse(h.Name, "setuid, setgid or sticky bit (mode %#o)", h.Mode)
	}
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeDir:
	case tar.TypeSymlink:
		if h.Linkname == "" || strings.ContainsRune(h.Linkname, 0) {
			return "", refuse(h.Name, "symlink without a usable target")
		}
	case tar.TypeLink:
		if _, err := linkTarget(h); err != nil {
			return "", err
		}
	case tar.TypeChar, tar.TypeBlock:
		return "", refuse(h.Name, "device node")
	case tar.TypeFifo:
		return "", refuse(h.Name, "FIFO")
	default:
		return "", refuse(h.Name, "unsupported entry type %q", h.Typeflag)
	}
	if name == "" && h.Typeflag != tar.TypeDir {
		return "", refuse(h.Name, "the root must be a directory")
	}
	return name, nil
}

// linkTarget is a hard link's target, relative to the root.
func linkTarget(h *tar.Header) (string, error) {
	t, err := entryName(h.Linkname)
	if err != nil || t == "" {
		return "", refuse(h.Name, "hard link to %q, outside the archive", h.Linkname)
	}
	return t, nil
}

// walk reads a gzipped tar, checks each entry's header and limits, and
// calls fn for each (with the entry's content as tr).
func walk(ctx context.Context, r io.Reader, lim Limits, fn func(name string, h *tar.Header, tr io.Reader) error) (Stats, error) {
	lim = lim.withDefaults()
	zr, err := gzip.NewReader(r)
	if err != nil {
		return Stats{}, &Error{Reason: "not a gzipped tar: " + err.Error()}
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	var st Stats
	seen := map[string]bool{}
	for {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return st, nil
		}
		if err != nil {
			return st, &Error{Reason: "not a valid gzipped tar: " + err.Error()}
		}
		switch h.Typeflag {
		case tar.TypeXGlobalHeader, tar.TypeXHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
			continue // read by the tar reader itself
		}
		name, err := checkHeader(h)
		if err != nil {
			return st, err
		}
		if seen[name] {
			return st, refuse(h.Name, "appears twice")
		}
		seen[name] = true
		if st.Entries++; st.Entries > lim.MaxEntries {
			return st, refuse("", "more than %d entries", lim.MaxEntries)
		}
		if h.Typeflag == tar.TypeReg {
			if h.Size < 0 {
				return st, refuse(h.Name, "negative size")
			}
			if st.Bytes += h.Size; st.Bytes > lim.MaxBytes {
				return st, refuse("", "its files add up to more than %d bytes", lim.MaxBytes)
			}
		}
		if err := fn(name, h, tr); err != nil {
			return st, err
		}
	}
}

// Check reads a whole gzipped tar and reports whether Unpack would accept
// its entries (it writes nothing).
func Check(ctx context.Context, r io.Reader, lim Limits) (Stats, error) {
	return walk(ctx, r, lim, func(string, *tar.Header, io.Reader) error { return nil })
}

// Owner is who owns what Unpack writes.
type Owner struct {
	UID, GID int
}

// Unpack writes the gzipped tar r into dir, an existing empty directory,
// through an os.Root. Everything belongs to own with no access for group
// or others: directories 0700, files their owner's bits plus read,
// symlinks as they are (they resolve where the tree is used, never here).
func Unpack(ctx context.Context, r io.Reader, dir string, own Owner, lim Limits) (Stats, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return Stats{}, err
	}
	defer root.Close()
	files := map[string]bool{}
	return walk(ctx, r, lim, func(name string, h *tar.Header, tr io.Reader) error {
		if name == "" {
			return nil // the root exists
		}
		if err := unpackEntry(root, name, h, tr, own, files); err != nil {
			var ae *Error
			if errors.As(err, &ae) {
				return err
			}
			return refuse(h.Name, "%v", err)
		}
		return nil
	})
}

func unpackEntry(root *os.Root, name string, h *tar.Header, tr io.Reader, own Owner, files map[string]bool) error {
	switch h.Typeflag {
	case tar.TypeDir:
		if err := root.Mkdir(name, 0o700); err != nil {
			return err
		}
		return root.Lchown(name, own.UID, own.GID)
	case tar.TypeSymlink:
		if err := root.Symlink(h.Linkname, name); err != nil {
			return err
		}
		return root.Lchown(name, own.UID, own.GID)
	case tar.TypeLink:
		target, _ := linkTarget(h)
		if !files[target] {
			return refuse(h.Name, "hard link to %q, which is not an earlier file of the archive", h.Linkname)
		}
		return root.Link(target, name)
	}
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.CopyN(f, tr, h.Size)
	if err == nil {
		err = f.Chown(own.UID, own.GID)
	}
	if err == nil {
		err = f.Chmod(os.FileMode(h.Mode).Perm()&0o700 | 0o400)
	}
	if err = errors.Join(err, f.Close()); err != nil {
		return err
	}
	files[name] = true
	return nil
}
