// Package local holds what the local sandbox drivers share: the per-instance
// state directory, the staged agent binary, cgroups, and the allocation of
// slots (each sandbox's unprivileged host uid and network names).
package local

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/berth-dev/berth/internal/cgroup"
	"github.com/berth-dev/berth/sandbox"
)

// Options configure a local driver. The zero value works for one Berth
// server per host.
type Options struct {
	// Instance distinguishes Berth servers that share a host, so that one
	// never touches another's sandboxes. Short, [a-z0-9]. Default "default".
	Instance string
	// StateDir holds the sandboxes' directories and the staged agent; every
	// path component must be traversable by unprivileged users, since the
	// sandboxes' own uids bind-mount from it. Default
	// /var/lib/berth/INSTANCE/DRIVER.
	StateDir string
	// AgentPath is the berth binary run as the agent inside sandboxes
	// (default: this executable). It is copied into StateDir.
	AgentPath string
	// VolumeDir holds the sandbox groups' volumes (sandbox.Spec.Volumes);
	// drivers that run the same groups share it. Default StateDir/volumes.
	VolumeDir string
	// UIDBase is the first host uid given to sandboxes (default derived
	// from Instance, above 1,000,000).
	UIDBase uint32
}

// Host is a driver's share of the machine.
type Host struct {
	Driver   string
	Instance string
	Dir      string
	Agent    string
	Cgroups  *cgroup.Manager
	// VolumeDir holds the groups' volumes (see Binds).
	VolumeDir string
	uidBase   uint32

	mu   sync.Mutex
	free []int
	next int

	templates sync.Map // disk size → *sync.Mutex held while its template is made
}

// NewHost prepares the state directory, stages the agent and opens the
// cgroup hierarchy.
func NewHost(driver string, o Options) (*Host, error) {
	if o.Instance == "" {
		o.Instance = "default"
	}
	if o.StateDir == "" {
		o.StateDir = filepath.Join("/var/lib/berth", o.Instance, driver)
	}
	if o.AgentPath == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		o.AgentPath = exe
	}
	if o.UIDBase == 0 {
		var h uint32
		for _, c := range o.Instance + "/" + driver {
			h = h*31 + uint32(c)
		}
		o.UIDBase = 1_000_000 + (h%4096)*65536
	}
	dir, err := filepath.Abs(o.StateDir)
	if err != nil {
		return nil, err
	}
	if err := mkdirTraversable(dir); err != nil {
		return nil, err
	}
	cg, err := cgroup.New(filepath.Join("berth", o.Instance+"-"+driver))
	if err != nil {
		return nil, err
	}
	if o.VolumeDir == "" {
		o.VolumeDir = filepath.Join(dir, "volumes")
	}
	vdir, err := filepath.Abs(o.VolumeDir)
	if err != nil {
		return nil, err
	}
	h := &Host{Driver: driver, Instance: o.Instance, Dir: dir, Cgroups: cg, VolumeDir: vdir, uidBase: o.UIDBase}
	h.Agent = filepath.Join(dir, "agent")
	if err := copyExecutable(o.AgentPath, h.Agent); err != nil {
		return nil, fmt.Errorf("stage agent: %w", err)
	}
	return h, nil
}

// mkdirTraversable creates dir and makes it and its parents searchable
// (o+x) without making anything readable to others.
func mkdirTraversable(dir string) error {
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return err
	}
	for d := dir; d != "/" && d != "."; d = filepath.Dir(d) {
		info, err := os.Stat(d)
		if err != nil {
			return err
		}
		if info.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, info.Mode().Perm()|0o011); err != nil {
				return err
			}
		}
	}
	return nil
}

func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// Slot is a small integer that is unique among a host's live sandboxes; it
// picks the sandbox's uid and network names.
func (h *Host) Slot() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n := len(h.free); n > 0 {
		s := h.free[n-1]
		h.free = h.free[:n-1]
		return s
	}
	h.next++
	return h.next
}

// Release returns a slot.
func (h *Host) Release(slot int) {
	h.mu.Lock()
	h.free = append(h.free, slot)
	h.mu.Unlock()
}

// UID is the unprivileged host uid of the sandbox in slot.
func (h *Host) UID(slot int) uint32 { return h.uidBase + uint32(slot) }

// RootUIDOffset separates a sandbox's second host uid from its first:
// UID(slot) and UID(slot+RootUIDOffset). The second is what the sandbox's
// root maps to: gVisor's sentry and gofer, and the image root's files of a
// sandbox on an image. Slots stay below it.
const RootUIDOffset = 1 << 15

// RootUID is the second unprivileged host uid of the sandbox in slot.
func (h *Host) RootUID(slot int) uint32 { return h.UID(slot + RootUIDOffset) }

// SandboxDir is where a sandbox's files live on the host; name is the
// sandbox's ID or, where the sandbox could see it, something else unique.
func (h *Host) SandboxDir(name string) string { return filepath.Join(h.Dir, "sb-"+name) }

// MakeSandboxDir creates a sandbox's directory with a socket directory
// ("run") owned by uid and private to it. (Its workspace and /tmp are in
// its disk: see MakeDisk.)
func (h *Host) MakeSandboxDir(name string, uid uint32) (string, error) {
	dir := h.SandboxDir(name)
	if err := os.Mkdir(dir, 0o711); err != nil {
		return "", err
	}
	for _, sub := range []string{"run"} {
		p := filepath.Join(dir, sub)
		if err := os.Mkdir(p, 0o700); err != nil {
			return "", err
		}
		if err := os.Chown(p, int(uid), int(uid)); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// Cleanup removes every sandbox directory and cgroup this host's instance
// left behind, unmounting their disks and detaching their loop devices
// first.
func (h *Host) Cleanup() error {
	h.Cgroups.Cleanup()
	h.Cgroups.Remove()
	cleanupDisks(h.Dir)
	entries, err := os.ReadDir(h.Dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "sb-") {
			if err := os.RemoveAll(filepath.Join(h.Dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// EtcFiles are the host's /etc entries visible (read-only) in a sandbox:
// what programs need to run and to reach the network, nothing that
// describes the host's users or secrets.
var EtcFiles = []string{
	"alternatives", "ssl", "ca-certificates", "ca-certificates.conf", "localtime",
	"mime.types", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "nsswitch.conf",
	"host.conf", "protocols", "services", "python3", "python3.11", "bash.bashrc",
	"inputrc", "magic", "magic.mime", "debian_version", "os-release", "profile",
}

// PrepareEtc builds the /etc that sandboxes see (read-only, one bind
// mount): copies of the host entries in etcFiles, plus passwd, group and
// hosts that name one user, "user" (uid 1000), and nobody else.
func PrepareEtc(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, name := range append(EtcFiles, "resolv.conf") {
		if err := copyTree(filepath.Join("/etc", name), filepath.Join(dir, name)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	files := map[string]string{
		"passwd": "root:x:0:0:root:/root:/usr/sbin/nologin\nuser:x:1000:1000:sandbox user:/tmp:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
		"group":  "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n",
		"hosts":  "127.0.0.1 localhost sandbox\n::1 localhost ip6-localhost ip6-loopback\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// copyTree copies a file, a symlink or a directory tree, keeping symlinks
// as they are (they resolve inside the sandbox, against its own /usr).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case info.Mode()&os.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case info.IsDir():
			if info.Mode().Perm()&0o005 != 0o005 {
				return filepath.SkipDir // private on the host (/etc/ssl/private): not for sandboxes
			}
			return os.MkdirAll(target, 0o755)
		case info.Mode().IsRegular():
			if info.Mode().Perm()&0o004 == 0 {
				return nil // not world-readable on the host: not for sandboxes
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(target, b, 0o644)
		}
		return nil
	})
}

// Stats measures a sandbox through its cgroup (zero if it has none).
func Stats(g *cgroup.Group) sandbox.Stats {
	if g == nil {
		return sandbox.Stats{}
	}
	pids, limit := g.Pids()
	return sandbox.Stats{OOMKills: g.OOMKills(), MemoryBytes: g.MemoryBytes(), Pids: pids, PidsLimit: limit, CPUTime: g.CPUUsage()}
}

// Tail keeps the first and the last 2 KiB written to it, for messages: a
// Go crash of the agent says why at its start, runsc at its end.
type Tail struct {
	mu         sync.Mutex
	head, last []byte
	cut        bool
}

func (t *Tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if room := 2048 - len(t.head); room > 0 {
		k := min(room, len(p))
		t.head = append(t.head, p[:k]...)
		p = p[k:]
	}
	t.last = append(t.last, p...)
	if len(t.last) > 2048 {
		t.last = t.last[len(t.last)-2048:]
		t.cut = true
	}
	return n, nil
}

func (t *Tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	sep := ""
	if t.cut {
		sep = "\n[…]\n"
	}
	return strings.TrimSpace(string(t.head) + sep + string(t.last))
}
