package local

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/sandbox"
)

// A sandbox on an image (sandbox.Root) gets its root from the host, made
// before the sandbox's runtime starts, in three steps:
//
//  1. an idmapped mount of the image's shared, read-only root
//     (open_tree + mount_setattr(MOUNT_ATTR_IDMAP)): on it, the files of
//     the image's user show as the sandbox's own host uid and gid, those
//     of the image's root as a second host uid of the sandbox's
//     (RootIDs), every other owner as the overflow id. Nothing is chowned,
//     nothing is copied: many sandboxes, each with its own uids, share one
//     unpacked image;
//  2. a kernel overlay with that mount as its lower layer and its upper
//     and work directories on the sandbox's disk (MakeDisk): the sandbox
//     can write where its image expects to, within its disk's quota, and
//     its writes die with it;
//  3. the mount points its runtime needs, and /etc/hosts, /etc/hostname
//     and /etc/resolv.conf, written by the host into the overlay (its
//     upper layer), never through a link of the image's.
//
// The alternative, running each sandbox as the host uid that the image's
// files carry on disk (shift + image uid), would give every sandbox of an
// image the same host uid; idmapped mounts keep one uid per sandbox at no
// measurable cost (an extra fork to make the mapping's user namespace, a
// few milliseconds).

// Names in a sandbox directory and in its disk.
const (
	rootMerged = "root"  // the overlay's mount point, in the sandbox directory
	rootLower  = "lower" // the idmapped mount, while the overlay is mounted
	rootLayer  = "root"  // upper and work directories, in the disk
)

// RootIDs are the host ids that a sandbox on an image maps the image's
// ids to: its user's (the sandbox's uid, the one its processes run as)
// and, when the image user is not root, its root's.
type RootIDs struct {
	UID, GID         uint32 // the image user's files
	RootUID, RootGID uint32 // the image root's files (unused if the image user is root)
}

// ImageRoot is a sandbox's root on an image: an overlay mounted at Dir.
type ImageRoot struct {
	Dir string
}

// Target is a mount point to make in an image root: a directory, or a
// file if File is set.
type Target struct {
	Path string
	File bool
}

// RootTargets are the mount points every sandbox on an image needs, on
// top of its own mounts'.
var RootTargets = []Target{
	{Path: "/proc"}, {Path: "/dev"}, {Path: "/sys"}, {Path: "/tmp"}, {Path: "/mnt/data"},
	{Path: "/.berth/run"}, {Path: "/.berth/agent", File: true},
}

// Targets are the mount points a sandbox of spec needs in its image root.
func Targets(spec sandbox.Spec, binds []Bind) []Target {
	t := append([]Target(nil), RootTargets...)
	for _, m := range binds {
		st, err := os.Stat(m.Source)
		t = append(t, Target{Path: m.Target, File: err == nil && !st.IsDir()})
	}
	if spec.EgressProxy != nil {
		t = append(t, Target{Path: sandbox.EgressCAPath, File: true})
	}
	return t
}

// MountImageRoot mounts the root of a sandbox on image r (see above) in
// the sandbox directory dir, with its writable layer on disk d, and makes
// targets in it.
func (h *Host) MountImageRoot(dir string, d *Disk, r *sandbox.Root, ids RootIDs, targets []Target) (_ *ImageRoot, err error) {
	if err := r.Check(); err != nil {
		return nil, err
	}
	st, err := os.Stat(r.Dir)
	if err != nil {
		return nil, fmt.Errorf("image root: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("image root %s: not a directory", r.Dir)
	}
	layer := filepath.Join(d.Mount, rootLayer)
	upper, work := filepath.Join(layer, "upper"), filepath.Join(layer, "work")
	if err := os.Mkdir(layer, 0o700); err != nil {
		return nil, err
	}
	for _, p := range []string{upper, work} {
		if err := os.Mkdir(p, 0o700); err != nil {
			return nil, err
		}
	}
	// The upper directory is the overlay's root directory: give it the
	// image root's owner and mode, as the image has it.
	owner := mapID(st.Sys().(*syscall.Stat_t).Uid, r.IDShift, r.UID, ids.UID, ids.RootUID)
	group := mapID(st.Sys().(*syscall.Stat_t).Gid, r.IDShift, r.GID, ids.GID, ids.RootGID)
	if err := os.Chown(upper, int(owner), int(group)); err != nil {
		return nil, err
	}
	if err := os.Chmod(upper, st.Mode().Perm()); err != nil {
		return nil, err
	}

	lower := filepath.Join(dir, rootLower)
	if err := h.mountIDMapped(r, ids, lower); err != nil {
		return nil, err
	}
	// The overlay keeps its own reference to the lower layer.
	defer func() {
		_ = unix.Unmount(lower, unix.MNT_DETACH)
		_ = os.Remove(lower)
	}()
	root := &ImageRoot{Dir: filepath.Join(dir, rootMerged)}
	if err := os.Mkdir(root.Dir, 0o700); err != nil {
		return nil, err
	}
	// volatile: no syncs; the layer does not outlive its sandbox.
	opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work + ",volatile"
	if err := unix.Mount("overlay", root.Dir, "overlay", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return nil, fmt.Errorf("mount the sandbox's root (overlay): %w", err)
	}
	defer func() {
		if err != nil {
			root.Unmount()
		}
	}()
	if err := h.prepareRoot(root.Dir, targets, owner, group); err != nil {
		return nil, fmt.Errorf("prepare the sandbox's root: %w", err)
	}
	return root, nil
}

// mapID is the host id that the idmapped mount shows on-disk id id as.
func mapID(id, shift, user, userHost, rootHost uint32) uint32 {
	switch {
	case id == shift+user:
		return userHost
	case id == shift:
		return rootHost
	}
	return 65534
}

// idMaps are the mappings of the idmapped mount: on-disk id → host id.
func idMaps(r *sandbox.Root, ids RootIDs) (uids, gids []syscall.SysProcIDMap) {
	one := func(user, userHost, rootHost uint32) []syscall.SysProcIDMap {
		m := []syscall.SysProcIDMap{{ContainerID: int(r.IDShift + user), HostID: int(userHost), Size: 1}}
		if user != 0 {
			m = append(m, syscall.SysProcIDMap{ContainerID: int(r.IDShift), HostID: int(rootHost), Size: 1})
		}
		return m
	}
	return one(r.UID, ids.UID, ids.RootUID), one(r.GID, ids.GID, ids.RootGID)
}

// mountIDMapped mounts an idmapped, read-only view of r.Dir at target.
func (h *Host) mountIDMapped(r *sandbox.Root, ids RootIDs, target string) error {
	uids, gids := idMaps(r, ids)
	userns, err := userNamespace(uids, gids)
	if err != nil {
		return fmt.Errorf("the image root's id mapping: %w", err)
	}
	defer userns.Close()
	fd, err := unix.OpenTree(unix.AT_FDCWD, r.Dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("open_tree %s: %w", r.Dir, err)
	}
	defer unix.Close(fd)
	attr := unix.MountAttr{
		Attr_set:  unix.MOUNT_ATTR_IDMAP | unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV,
		Userns_fd: uint64(userns.Fd()),
	}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		return fmt.Errorf("idmap %s (mount_setattr; needs Linux 5.12 and a file system that supports idmapped mounts): %w", r.Dir, err)
	}
	if err := os.Mkdir(target, 0o700); err != nil {
		return err
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount: %w", err)
	}
	return nil
}

// userNamespace returns a user namespace with the given mappings: that of
// a short-lived child made for it (a process cannot unshare its user
// namespace once it has threads, and Go's always has).
func userNamespace(uids, gids []syscall.SysProcIDMap) (*os.File, error) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(sleep, "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWUSER, UidMappings: uids, GidMappings: gids,
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	// Go has written the maps by the time Start returns.
	return os.Open(fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid))
}

// prepareRoot makes targets and the /etc files in root (the overlay, not
// yet seen by any sandbox) through os.Root: a link in the image never takes
// a write elsewhere; it is replaced.
func (h *Host) prepareRoot(dir string, targets []Target, owner, group uint32) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, t := range targets {
		if err := ensure(root, t.Path, t.File, nil); err != nil {
			return fmt.Errorf("%s: %w", t.Path, err)
		}
	}
	resolv, err := os.ReadFile(filepath.Join(h.Dir, "etc", "resolv.conf"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, f := range []struct {
		name    string
		content []byte
	}{
		{"/etc/hosts", []byte(etcHosts)},
		{"/etc/hostname", []byte("sandbox\n")},
		{"/etc/resolv.conf", resolv},
	} {
		if err := ensure(root, f.name, true, f.content); err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
		if err := root.Lchown(strings.TrimPrefix(f.name, "/"), int(owner), int(group)); err != nil {
			return err
		}
	}
	return nil
}

// ensure makes p in root a directory (or a file holding content), with
// every parent a directory: whatever else is in their way (a link, a file)
// is removed first.
func ensure(root *os.Root, p string, file bool, content []byte) error {
	parts := strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/")
	for i := range parts {
		rel := strings.Join(parts[:i+1], "/")
		last := i == len(parts)-1
		st, err := root.Lstat(rel)
		switch {
		case err == nil && !last && st.IsDir():
			continue
		case err == nil && last && !file && st.IsDir():
			return nil
		case err == nil && last && file && st.Mode().IsRegular() && content == nil:
			return nil
		case err == nil:
			if err := root.RemoveAll(rel); err != nil {
				return err
			}
		case !errors.Is(err, fs.ErrNotExist):
			return err
		}
		if !last || !file {
			if err := root.Mkdir(rel, 0o755); err != nil {
				return err
			}
			continue
		}
		return root.WriteFile(rel, content, 0o644)
	}
	return nil
}

const etcHosts = "127.0.0.1 localhost sandbox\n::1 localhost ip6-localhost ip6-loopback\n"

// Unmount unmounts the root; it must go before the disk it is on. It is
// safe to call more than once, and on nil.
func (r *ImageRoot) Unmount() {
	if r == nil {
		return
	}
	unmountRetry(r.Dir)
}

// unmountRetry unmounts target, waiting a little for its last users to
// die, detaching it if they do not.
func unmountRetry(target string) {
	for i := 0; i < 50; i++ {
		err := unix.Unmount(target, 0)
		if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return
		}
		if !errors.Is(err, unix.EBUSY) || i == 49 {
			_ = unix.Unmount(target, unix.MNT_DETACH)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
