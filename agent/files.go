package agent

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
)

// CleanName validates a file name relative to the workspace and returns its
// clean form. Names that are empty, absolute, contain NUL or backslashes, or
// climb out with "..", are refused: the workspace is the only place the file
// API reaches. (Inside the agent, os.Root enforces the same boundary against
// symlinks, so this is the first of two checks.)
func CleanName(name string) (string, error) {
	switch {
	case name == "":
		return "", fmt.Errorf("%w: the file name is empty", errBadName)
	case strings.ContainsAny(name, "\x00\\"):
		return "", fmt.Errorf("%w: %q contains a NUL byte or a backslash", errBadName, name)
	case path.IsAbs(name):
		return "", fmt.Errorf("%w: %q is absolute; names are relative to /mnt/data", errBadName, name)
	case len(name) > 1024:
		return "", fmt.Errorf("%w: the name is longer than 1024 bytes", errBadName)
	}
	clean := path.Clean(name)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("%w: %q points outside /mnt/data", errBadName, name)
	}
	if clean == "." {
		return "", fmt.Errorf("%w: %q names the workspace itself, not a file", errBadName, name)
	}
	return clean, nil
}

// IsBadName reports whether err is a rejected file name.
func IsBadName(err error) bool { return errors.Is(err, errBadName) }

// workspace serves file operations confined to one directory.
type workspace struct {
	root *os.Root
}

func (w *workspace) list(dir string) ([]FileInfo, error) {
	if dir == "" {
		dir = "."
	} else {
		clean, err := CleanName(dir)
		if err != nil {
			return nil, err
		}
		dir = clean
	}
	f, err := w.root.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	entries, err := f.ReadDir(-1)
	if err != nil {
		return nil, err
	}
	out := make([]FileInfo, 0, len(entries))
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			continue
		}
		out = append(out, fileInfo(path.Join(dir, e.Name()), info))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func fileInfo(name string, info fs.FileInfo) FileInfo {
	return FileInfo{
		Name:    strings.TrimPrefix(name, "./"),
		Size:    info.Size(),
		ModTime: info.ModTime().UTC(),
		IsDir:   info.IsDir(),
		Mode:    info.Mode().String(),
		Symlink: info.Mode()&fs.ModeSymlink != 0,
	}
}

func (w *workspace) open(name string) (*os.File, fs.FileInfo, error) {
	clean, err := CleanName(name)
	if err != nil {
		return nil, nil, err
	}
	f, err := w.root.Open(clean)
	if err != nil {
		return nil, nil, err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !info.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%w: %q is not a regular file", errBadName, name)
	}
	return f, info, nil
}

// write stores r at name (parents created) through a temporary file, so a
// failed upload never leaves half a file behind.
func (w *workspace) write(name string, r io.Reader) (FileInfo, error) {
	clean, err := CleanName(name)
	if err != nil {
		return FileInfo{}, err
	}
	if dir := path.Dir(clean); dir != "." {
		if err := w.root.MkdirAll(dir, 0o755); err != nil {
			return FileInfo{}, err
		}
	}
	tmp := path.Join(path.Dir(clean), ".berth-upload-"+newNonce())
	f, err := w.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return FileInfo{}, err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = w.root.Rename(tmp, clean)
	}
	if err != nil {
		_ = w.root.Remove(tmp)
		return FileInfo{}, err
	}
	info, err := w.root.Stat(clean)
	if err != nil {
		return FileInfo{}, err
	}
	return fileInfo(clean, info), nil
}

func (w *workspace) remove(name string) error {
	clean, err := CleanName(name)
	if err != nil {
		return err
	}
	info, err := w.root.Lstat(clean)
	if err != nil {
		return err
	}
	if info.IsDir() {
		return w.root.RemoveAll(clean)
	}
	return w.root.Remove(clean)
}
