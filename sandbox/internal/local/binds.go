package local

import (
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"

	"github.com/berth-dev/berth/sandbox"
)

// This file is the local drivers' uid and path policy for what a Spec
// names without host details: a Group becomes a host uid, its Volumes
// directories under the host's volume directory, Files a tree handed to
// the sandbox's uid. The callers (apps, pools) never see either.

// Bind is a host directory bound into a sandbox.
type Bind struct {
	Source, Target string
	ReadOnly       bool
}

// Group uids: a range of their own, below every slot's (Options.UIDBase is
// at least 1,000,000) and above the host's ordinary users.
const (
	groupUIDBase  = 900_000
	groupUIDRange = 90_000
)

var (
	groupRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9/-]{0,100}$`)
	volumeRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
)

// GroupUID is the unprivileged host uid shared by the sandboxes of group
// (sandbox.Spec.Group), whichever local driver runs them: it depends on
// the instance and the group's name only, so that it is stable across
// restarts and the group's volumes stay its own.
func (h *Host) GroupUID(group string) uint32 {
	f := fnv.New32a()
	_, _ = f.Write([]byte(h.Instance + "/" + group))
	return groupUIDBase + f.Sum32()%groupUIDRange
}

// SandboxUID is the host uid a sandbox of spec runs as: its group's, or
// its slot's own.
func (h *Host) SandboxUID(spec sandbox.Spec, slot int) uint32 {
	if spec.Group != "" {
		return h.GroupUID(spec.Group)
	}
	return h.UID(slot)
}

// groupDir is where group's volumes live on the host.
func (h *Host) groupDir(group string) (string, error) {
	if !groupRE.MatchString(group) || strings.Contains(group, "//") || strings.HasSuffix(group, "/") {
		return "", fmt.Errorf("group %q: not made of [a-z0-9/-]", group)
	}
	return filepath.Join(h.VolumeDir, strings.ReplaceAll(group, "/", "_")), nil
}

// Binds makes what spec's Volumes and Files need on the host for a
// sandbox that runs as host uid, and returns the bind mounts that give
// them to it: each volume a directory of the group's, owned by uid and
// private to it, made on first use; each tree of Files handed to uid
// (see Adopt).
func (h *Host) Binds(spec sandbox.Spec, uid uint32) ([]Bind, error) {
	var binds []Bind
	for _, f := range spec.Files {
		if !filepath.IsAbs(f.Dir) || !filepath.IsAbs(f.Target) {
			return nil, fmt.Errorf("files %q at %q: not absolute paths", f.Dir, f.Target)
		}
		// (Its parents: traversable, as the sandbox's uid binds it.)
		if err := mkdirTraversable(filepath.Dir(f.Dir)); err != nil {
			return nil, err
		}
		if err := Adopt(f.Dir, uid); err != nil {
			return nil, fmt.Errorf("files for %s: %w", f.Target, err)
		}
		binds = append(binds, Bind{Source: f.Dir, Target: f.Target, ReadOnly: true})
	}
	if len(spec.Volumes) == 0 {
		return binds, nil
	}
	if spec.Group == "" {
		return nil, errors.New("volumes need a group")
	}
	dir, err := h.groupDir(spec.Group)
	if err != nil {
		return nil, err
	}
	for _, v := range spec.Volumes {
		if !volumeRE.MatchString(v.Name) || !filepath.IsAbs(v.Path) {
			return nil, fmt.Errorf("volume %q at %q: bad name or path", v.Name, v.Path)
		}
		p := filepath.Join(dir, v.Name)
		if err := makeVolume(p, uid); err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		binds = append(binds, Bind{Source: p, Target: v.Path})
	}
	return binds, nil
}

// makeVolume makes a volume's directory, private to uid, under parents
// that uid can traverse but not list.
func makeVolume(p string, uid uint32) error {
	if err := mkdirTraversable(filepath.Dir(p)); err != nil {
		return err
	}
	if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return os.Lchown(p, int(uid), int(uid))
}

// RemoveVolumes removes group's volumes.
func (h *Host) RemoveVolumes(group string) error {
	dir, err := h.groupDir(group)
	if err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// Adopt hands a tree of the caller's files to uid: every file and
// directory owned by uid, readable by it and by nobody else (the owner's
// permission bits kept, plus read; symbolic links are changed, never
// followed). A tree already adopted by uid (its top directory owned by uid
// with mode 0700, set last) is left alone, so that it costs one stat on
// every start but the first.
func Adopt(dir string, uid uint32) error {
	info, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !info.IsDir() {
		return fmt.Errorf("%s: not a directory", dir)
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Uid == uid && info.Mode().Perm() == 0o700 {
		return nil
	}
	id := int(uid)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		if err := os.Lchown(p, id, id); err != nil {
			return err
		}
		switch t := d.Type(); {
		case t.IsDir():
			return os.Chmod(p, 0o700)
		case t.IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			return os.Chmod(p, info.Mode().Perm()&0o700|0o400)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := os.Chown(dir, id, id); err != nil {
		return err
	}
	return os.Chmod(dir, 0o700)
}
