package local

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/sandbox"
)

// A sandbox's writable space (its workspace and /tmp) lives in a file
// system of its own: a sparse image file in the sandbox directory,
// formatted ext4 with no journal and an inode count that follows its size,
// attached to a loop device and mounted (nosuid, nodev) at DISK. The size
// is the quota: a write past it fails with ENOSPC inside the sandbox, and
// the host's disk never holds more than the image's size for it. The image
// is sparse, so an idle sandbox costs the host well under a MiB.
//
// The loop device is attached with LO_FLAGS_AUTOCLEAR: unmounting the file
// system (at teardown, or by Cleanup after a crash) also detaches it.
// Copying a template image (formatted once per size) and mounting it add
// a few milliseconds to a sandbox's start.

// Directory names in a sandbox directory and in its disk.
const (
	diskImage = "disk.img"
	diskMount = "disk"
	// DataDir and TmpDir are the workspace (/mnt/data) and /tmp, inside
	// the disk.
	DataDir = "data"
	TmpDir  = "tmp"
)

// BytesPerInode sets a disk's inode count from its size (ext4's default
// ratio): 65,536 files per GiB.
const BytesPerInode = 16 << 10

// MinDiskBytes is the smallest disk a sandbox can have.
const MinDiskBytes = 16 << 20

// Disk is a sandbox's mounted file system.
type Disk struct {
	Image string // the image file
	Mount string // where the host mounted it
}

// DiskDir is where a sandbox's disk is mounted on the host.
func (h *Host) DiskDir(id string) string { return filepath.Join(h.SandboxDir(id), diskMount) }

// MakeDisk creates and mounts a sandbox's disk of size bytes, and makes
// its workspace and /tmp, owned by uid. dir is the sandbox directory. The
// image is a sparse copy of a template formatted once per size, which
// saves each start a mkfs.
func (h *Host) MakeDisk(dir string, size int64, uid uint32) (*Disk, error) {
	size = max(size, MinDiskBytes)
	tmpl, err := h.diskTemplate(size)
	if err != nil {
		return nil, err
	}
	d := &Disk{Image: filepath.Join(dir, diskImage), Mount: filepath.Join(dir, diskMount)}
	if err := copySparse(tmpl, d.Image); err != nil {
		return nil, fmt.Errorf("disk image: %w", err)
	}
	if err := os.Mkdir(d.Mount, 0o711); err != nil {
		return nil, err
	}
	if err := mountLoop(d.Image, d.Mount); err != nil {
		return nil, err
	}
	if err := os.Chmod(d.Mount, 0o711); err != nil {
		d.Unmount()
		return nil, err
	}
	_ = os.Remove(filepath.Join(d.Mount, "lost+found"))
	for _, sub := range []struct {
		name string
		mode os.FileMode
	}{{DataDir, 0o700}, {TmpDir, 0o700}} {
		p := filepath.Join(d.Mount, sub.name)
		if err := os.Mkdir(p, sub.mode); err != nil {
			d.Unmount()
			return nil, err
		}
		if err := os.Chown(p, int(uid), int(uid)); err != nil {
			d.Unmount()
			return nil, err
		}
	}
	return d, nil
}

// diskTemplate returns a formatted, unmounted image of size bytes, made
// on first use.
func (h *Host) diskTemplate(size int64) (string, error) {
	dir := filepath.Join(h.Dir, "disk-templates")
	p := filepath.Join(dir, "ext4-"+strconv.FormatInt(size, 10)+".img")
	if _, err := os.Stat(p); err == nil {
		return p, nil // made already (renamed into place whole)
	}
	// Starts that need this size wait for one mkfs; others go on.
	mu, _ := h.templates.LoadOrStore(size, new(sync.Mutex))
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	tmp := p + ".tmp"
	_ = os.Remove(tmp)
	if err := format(tmp, size); err != nil {
		_ = os.Remove(tmp)
		return "", err
	}
	return p, os.Rename(tmp, p)
}

// format makes a sparse image of size bytes with an ext4 file system: no
// journal (a sandbox's disk does not outlive a host crash), no blocks
// reserved for root, 4 KiB blocks, one inode per BytesPerInode, metadata
// packed at the start with no backups and no room to grow (about 100 KiB
// of data to copy per sandbox), and inode tables initialized lazily
// (never, in fact: mounted with noinit_itable, so the image stays sparse).
func format(image string, size int64) error {
	f, err := os.OpenFile(image, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	f.Close()
	if err != nil {
		return err
	}
	inodes := max(size/BytesPerInode, 1024)
	cmd := exec.Command("mkfs.ext4", "-q", "-F", "-T", "default", "-b", "4096", "-m", "0",
		"-O", "^has_journal,^resize_inode,sparse_super2", "-N", strconv.FormatInt(inodes, 10),
		"-E", "lazy_itable_init=1,nodiscard,packed_meta_blocks=1,num_backup_sb=0", image)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("format the sandboxes' disk (mkfs.ext4, from e2fsprogs): %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// copySparse copies src to a new file dst, data extents only: holes stay
// holes.
func copySparse(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := out.Truncate(st.Size()); err != nil {
		return err
	}
	ifd, ofd := int(in.Fd()), int(out.Fd())
	for off := int64(0); off < st.Size(); {
		data, err := unix.Seek(ifd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return err
		}
		hole, err := unix.Seek(ifd, data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		for r, w := data, data; r < hole; {
			n, err := unix.CopyFileRange(ifd, &r, ofd, &w, int(hole-r), 0)
			if err != nil {
				return err
			}
			if n == 0 {
				return io.ErrUnexpectedEOF
			}
		}
		off = hole
	}
	return out.Close()
}

// mountLoop attaches image to a free loop device (detached again when it is
// unmounted) and mounts it at target.
func mountLoop(image, target string) error {
	dev, fd, err := attachLoop(image)
	if err != nil {
		return fmt.Errorf("attach the sandbox's disk to a loop device: %w", err)
	}
	// With autoclear, the device detaches when its last user goes: the fd
	// stays open until the mount holds it.
	defer unix.Close(fd)
	err = unix.Mount(dev, target, "ext4", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOATIME, "noinit_itable,errors=remount-ro")
	if err != nil {
		detachLoop(dev)
		return fmt.Errorf("mount the sandbox's disk: %w", err)
	}
	return nil
}

// attachLoop binds image to a free loop device with autoclear set, and
// returns the device's path and an open fd on it.
func attachLoop(image string) (string, int, error) {
	img, err := os.OpenFile(image, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", -1, err
	}
	defer img.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", -1, err
	}
	defer ctl.Close()
	for range 100 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", -1, fmt.Errorf("LOOP_CTL_GET_FREE: %w", err)
		}
		dev := "/dev/loop" + strconv.Itoa(n)
		fd, err := openLoop(dev, n)
		if err != nil {
			return "", -1, err
		}
		cfg := unix.LoopConfig{Fd: uint32(img.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		copy(cfg.Info.File_name[:], image)
		err = unix.IoctlLoopConfigure(fd, &cfg)
		if err == nil {
			return dev, fd, nil
		}
		unix.Close(fd)
		if !errors.Is(err, unix.EBUSY) {
			return "", -1, fmt.Errorf("LOOP_CONFIGURE %s: %w", dev, err)
		}
		// Another process took that device first: ask again.
		time.Sleep(time.Millisecond)
	}
	return "", -1, errors.New("no free loop device")
}

// openLoop opens loop device n, creating its node if the host's /dev has
// none (a static /dev in a container).
func openLoop(dev string, n int) (int, error) {
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		if err := unix.Mknod(dev, unix.S_IFBLK|0o600, int(unix.Mkdev(7, uint32(n)))); err != nil && !errors.Is(err, unix.EEXIST) {
			return -1, fmt.Errorf("create %s: %w", dev, err)
		}
		fd, err = unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", dev, err)
	}
	return fd, nil
}

func detachLoop(dev string) {
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	_ = unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0)
	unix.Close(fd)
}

// Unmount unmounts the disk (which detaches its loop device) and removes
// the image. It is safe to call more than once.
func (d *Disk) Unmount() {
	if d == nil {
		return
	}
	for i := 0; i < 50; i++ {
		err := unix.Unmount(d.Mount, 0)
		if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break
		}
		if !errors.Is(err, unix.EBUSY) || i == 49 {
			// Still in use by a process that is about to die: detach it
			// now; the device clears itself once the last user is gone.
			_ = unix.Unmount(d.Mount, unix.MNT_DETACH)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = os.Remove(d.Image)
}

// Usage measures a disk: bytes and inodes used, and its limits.
func (d *Disk) Usage() (used, size, inodesUsed, inodes int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(d.Mount, &st); err != nil {
		return 0, 0, 0, 0, err
	}
	bs := int64(st.Bsize)
	size = int64(st.Blocks) * bs
	used = size - int64(st.Bavail)*bs
	inodes = int64(st.Files)
	inodesUsed = inodes - int64(st.Ffree)
	return used, size, inodesUsed, inodes, nil
}

// DiskStats adds a disk's usage to s.
func DiskStats(s sandbox.Stats, d *Disk) sandbox.Stats {
	if d == nil {
		return s
	}
	used, size, iused, inodes, err := d.Usage()
	if err == nil {
		s.DiskBytes, s.DiskLimitBytes, s.DiskInodes, s.DiskInodesLimit = used, size, iused, inodes
	}
	return s
}

// cleanupDisks unmounts every sandbox disk under dir and detaches any loop
// device still bound to an image there (a crash between attaching and
// mounting).
func cleanupDisks(dir string) {
	UnmountUnder(dir)
	devs, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, p := range devs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		backing := strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
		if strings.HasPrefix(backing, dir+"/") {
			detachLoop("/dev/" + filepath.Base(filepath.Dir(filepath.Dir(p))))
		}
	}
}

// LoopDevicesUnder lists the loop devices bound to a file under dir (for
// tests: none should outlive their sandbox).
func LoopDevicesUnder(dir string) []string {
	var out []string
	devs, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, p := range devs {
		b, err := os.ReadFile(p)
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), dir+"/") {
			out = append(out, filepath.Base(filepath.Dir(filepath.Dir(p))))
		}
	}
	return out
}

// UnmountUnder detaches every mount at or below dir, the deepest first.
func UnmountUnder(dir string) {
	for _, mp := range MountsUnder(dir) {
		_ = unix.Unmount(mp, unix.MNT_DETACH)
	}
}

// MountsUnder lists the mount points at or below dir, the deepest (latest)
// first.
func MountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			points = append(points, mp)
		}
	}
	for i, j := 0, len(points)-1; i < j; i, j = i+1, j-1 {
		points[i], points[j] = points[j], points[i]
	}
	return points
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of
// /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
