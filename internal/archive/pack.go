package archive

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
	"time"
)

// IgnoreFile names the file of patterns that Pack leaves out, one a line
// ("#" starts a comment; a pattern with no "/" matches a name at any
// depth, one with "/" a path from the root; a trailing "/" matches only
// directories).
const IgnoreFile = ".berthignore"

// PackOptions configure Pack.
type PackOptions struct {
	// Skipped, if set, is told of each entry left out and why.
	Skipped func(rel, why string)
	// KeepIgnored packs what .berthignore names too.
	KeepIgnored bool
}

// Pack writes the tree at dir to w as a gzipped tar: regular files,
// directories and symlinks (as links, never followed), in lexical order,
// with modes' permission bits only (no setuid), no owners and no times,
// so that the same tree gives the same bytes. Other files (FIFOs,
// sockets, devices) and what .berthignore names are skipped. The tree is
// read through an os.Root.
func Pack(ctx context.Context, w io.Writer, dir string, o PackOptions) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	var ign ignore
	if !o.KeepIgnored {
		if ign, err = readIgnore(root); err != nil {
			return err
		}
	}
	zw, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
	tw := tar.NewWriter(zw)
	skip := func(rel, why string) {
		if o.Skipped != nil {
			o.Skipped(rel, why)
		}
	}
	err = fs.WalkDir(root.FS(), ".", func(rel string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		if ign.match(rel, d.IsDir()) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		return packEntry(root, tw, rel, d, skip)
	})
	if err != nil {
		return err
	}
	return errors.Join(tw.Close(), zw.Close())
}

func packEntry(root *os.Root, tw *tar.Writer, rel string, d fs.DirEntry, skip func(rel, why string)) error {
	h := &tar.Header{Name: rel, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
	switch t := d.Type(); {
	case t&fs.ModeSymlink != 0:
		link, err := root.Readlink(rel)
		if err != nil {
			return err
		}
		h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, link, 0o777
		return tw.WriteHeader(h)
	case t.IsDir():
		info, err := d.Info()
		if err != nil {
			return err
		}
		h.Typeflag, h.Name, h.Mode = tar.TypeDir, rel+"/", int64(info.Mode().Perm())
		return tw.WriteHeader(h)
	case t.IsRegular():
		return packFile(root, tw, h)
	default:
		skip(rel, fmt.Sprintf("a %s, not a regular file, directory or symlink", strings.TrimLeft(t.String(), "-")))
		return nil
	}
}

func packFile(root *os.Root, tw *tar.Writer, h *tar.Header) error {
	// O_NONBLOCK: a FIFO that took the file's place must not block.
	f, err := root.OpenFile(h.Name, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file any more", h.Name)
	}
	h.Typeflag, h.Mode, h.Size = tar.TypeReg, int64(info.Mode().Perm()), info.Size()
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	if _, err := io.CopyN(tw, f, h.Size); err != nil {
		return fmt.Errorf("%s: %w (did it change while it was packed?)", h.Name, err)
	}
	return nil
}

type ignore []string

func readIgnore(root *os.Root) (ignore, error) {
	f, err := root.Open(IgnoreFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ign ignore
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if _, err := path.Match(strings.Trim(line, "/"), ""); err != nil {
			return nil, fmt.Errorf("%s: bad pattern %q: %w", IgnoreFile, line, err)
		}
		ign = append(ign, line)
	}
	return ign, sc.Err()
}

// match reports whether rel (slash-separated) is ignored.
func (ign ignore) match(rel string, isDir bool) bool {
	for _, p := range ign {
		dirOnly := strings.HasSuffix(p, "/")
		p = strings.TrimSuffix(p, "/")
		if dirOnly && !isDir {
			continue
		}
		target := path.Base(rel)
		if strings.Contains(p, "/") {
			p, target = strings.TrimPrefix(p, "/"), rel
		}
		if ok, _ := path.Match(p, target); ok {
			return true
		}
	}
	return false
}
