// Package gvisor is the sandbox driver for gVisor: each sandbox is an OCI
// bundle run by runsc, whose user-space kernel (the sentry) answers the
// sandbox's system calls so that untrusted code never reaches the host
// kernel directly. Around it the driver keeps what the bubblewrap driver
// does: the host's /usr read-only as the root file system, a private /tmp
// and workspace, no capabilities, no-new-privs, a seccomp profile (enforced
// by the sentry), and a host cgroup per sandbox for memory, pids and CPU.
// The sentry and its gofer run in a user namespace as two unprivileged host
// uids of the sandbox's own, never as root.
//
// On an image (sandbox.Spec.Root) the bundle's root is the host's overlay
// of the image (local.MountImageRoot), writable, with runsc's own overlay
// off (--overlay2 none): writes go through the gofer to the overlay's upper
// layer on the sandbox's disk, within its quota, rather than to sentry
// memory. The sandbox's user is the image's, mapped to the sandbox's own
// host uid, as the idmapped mount maps the image user's files; the image
// root's files map to the sentry's uid.
//
// The agent's socket is shared with the host through runsc's --host-uds:
// the agent listens on /.berth/run/agent.sock inside, a bind mount of the
// sandbox directory's "run", and the host opens that file once, when the
// agent is ready, and connects through the open file ever after (see
// local.Endpoint): the sandbox can rename or replace the name, not redirect
// the host.
//
// Limits: the memory limit is the host cgroup's and covers the whole
// sandbox, the sentry included (about 25 MB when idle). A process that
// allocates past it is killed by the host's OOM killer (which picks the
// systrap stub that maps its memory) and the sandbox lives on; were the
// sentry picked, the sandbox would stop and Done say so. The pids limit is
// RLIMIT_NPROC inside the sentry; the agent runs user code under a lower
// one, so a fork bomb always leaves it room to act. The CPU limit is
// the cgroup's quota on the sentry.
package gvisor

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/internal/cgroup"
	"github.com/berth-dev/berth/internal/netns"
	"github.com/berth-dev/berth/internal/seccomp"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/internal/local"
)

// Options configure the driver; the zero value is usable.
type Options struct {
	local.Options
	// Runsc is the runsc binary (default: "runsc" on $PATH). It must be a
	// static build (CGO_ENABLED=0): a dynamically linked runsc cannot boot
	// a sandbox.
	Runsc string
	// Platform is runsc's platform (default "systrap").
	Platform string
	Logger   *slog.Logger
}

// Defaults applied to zero limits.
var DefaultLimits = sandbox.Limits{MemoryBytes: 512 << 20, CPU: 1, Pids: 256, TmpBytes: 256 << 20, DiskBytes: sandbox.DefaultDiskBytes}

const (
	// The sandbox's processes are the sentry's tasks, not host processes:
	// their number is bounded inside the sentry with RLIMIT_NPROC (the
	// sandbox has one user). The host cgroup's pids.max counts the sentry's
	// and the gofer's threads and systrap's stub processes instead (two to
	// four per sandbox process, plus a base of about 30): it is a backstop,
	// set above what the sandbox's own limit allows, that stops the sentry
	// as a whole if it is ever reached.
	hostPidsPerPid = 4
	hostPidsBase   = 256
	// sandboxUID is the uid (and gid) that code in the sandbox runs as.
	sandboxUID = 1000
)

// Runtime is the gVisor driver.
type Runtime struct {
	host     *local.Host
	runsc    string
	platform string
	root     string // runsc's --root: its state for this instance
	log      *slog.Logger
	net      *netns.Manager
}

// New checks for runsc and prepares the host.
func New(o Options) (*Runtime, error) {
	if o.Runsc == "" {
		o.Runsc = "runsc"
	}
	path, err := exec.LookPath(o.Runsc)
	if err != nil {
		return nil, fmt.Errorf("%w: gVisor's runsc not found (install a static build: "+
			"CGO_ENABLED=0 go install gvisor.dev/gvisor/runsc@latest, or see https://gvisor.dev/docs/user_guide/install/; "+
			"then put it on $PATH or set the driver's runsc path): %v", sandbox.ErrUnavailable, err)
	}
	if path, err = filepath.Abs(path); err != nil {
		return nil, err
	}
	if err := checkStatic(path); err != nil {
		return nil, fmt.Errorf("%w: %v", sandbox.ErrUnavailable, err)
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: runsc must run as root", sandbox.ErrUnavailable)
	}
	if o.Platform == "" {
		o.Platform = "systrap"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	host, err := local.NewHost("gvisor", o.Options)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", sandbox.ErrUnavailable, err)
	}
	if err := local.PrepareEtc(filepath.Join(host.Dir, "etc")); err != nil {
		return nil, fmt.Errorf("prepare the sandboxes' /etc: %w", err)
	}
	root := filepath.Join(host.Dir, "runsc-root")
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	r := &Runtime{host: host, runsc: path, platform: o.Platform, root: root, log: o.Logger,
		net: netns.New(host.Instance + "g")}
	return r, nil
}

// checkStatic refuses a dynamically linked runsc: its sandbox re-executes
// itself inside an empty chroot, where no dynamic loader is found, and fails
// to boot with "fork/exec /proc/self/exe: no such file or directory".
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("runsc at %s: %v", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("runsc at %s is dynamically linked and cannot boot sandboxes: "+
				"rebuild it with CGO_ENABLED=0 go install gvisor.dev/gvisor/runsc@latest", path)
		}
	}
	return nil
}

// Name implements sandbox.Runtime.
func (r *Runtime) Name() string { return "gvisor" }

// RemoveVolumes implements sandbox.Runtime.
func (r *Runtime) RemoveVolumes(_ context.Context, group string) error {
	return r.host.RemoveVolumes(group)
}

// Start implements sandbox.Runtime.
func (r *Runtime) Start(ctx context.Context, spec sandbox.Spec) (_ sandbox.Sandbox, err error) {
	l := withDefaults(spec.Limits)
	if err := spec.Root.Check(); err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", spec.ID, err)
	}
	slot := r.host.Slot()
	// The host uid: the group's if it has one (its replicas share
	// volumes), else the slot's own.
	uid := r.host.SandboxUID(spec, slot)
	sb := &box{id: spec.ID, rt: r, slot: slot, done: make(chan struct{})}
	defer func() {
		if err != nil {
			sb.teardown()
		}
	}()

	if slot >= local.RootUIDOffset {
		return nil, fmt.Errorf("sandbox %s: too many sandboxes", spec.ID)
	}
	if sb.dir, err = r.host.MakeSandboxDir(spec.ID, uid); err != nil {
		return nil, err
	}
	if sb.disk, err = r.host.MakeDisk(sb.dir, l.DiskBytes, uid); err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", spec.ID, err)
	}
	if sb.binds, err = r.host.Binds(spec, uid); err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", spec.ID, err)
	}
	// runsc finds the group made (and limited) here and runs the sandbox in
	// it without touching its settings; it sizes the sentry's memory and
	// CPUs from them.
	ids := newIDs(spec.Root, uid, r.host.RootUID(slot))
	if spec.Root != nil {
		rids := local.RootIDs{UID: uid, GID: uid, RootUID: ids.hostUID(0), RootGID: ids.hostGID(0)}
		if sb.root, err = r.host.MountImageRoot(sb.dir, sb.disk, spec.Root, rids, local.Targets(spec, sb.binds)); err != nil {
			return nil, fmt.Errorf("sandbox %s: %w", spec.ID, err)
		}
	}
	if sb.cg, err = r.host.Cgroups.Create(spec.ID, cgroup.Limits{
		MemoryBytes: l.MemoryBytes, Pids: hostPidsBase + hostPidsPerPid*l.Pids, CPU: l.CPU,
	}); err != nil {
		return nil, err
	}
	if spec.Egress {
		if sb.netns, err = r.net.Create(ctx, slot, spec.EgressProxy != nil); err != nil {
			return nil, err
		}
		if sb.egress, err = local.AttachEgress(ctx, spec.EgressProxy, sb.netns, sb.dir); err != nil {
			return nil, err
		}
	}
	if err := r.writeBundle(sb, spec, ids, l); err != nil {
		return nil, fmt.Errorf("sandbox %s: write bundle: %w", spec.ID, err)
	}

	cmd := exec.Command(r.runsc, append(r.flags(sb.netns != nil, sb.root != nil), "run", "--bundle", sb.dir, spec.ID)...)
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}
	cmd.Dir = sb.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setsid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr local.Tail
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start runsc: %w", err)
	}
	sb.cmd = cmd
	go func() {
		err := cmd.Wait()
		if !sb.stopping.Load() {
			r.log.Warn("gVisor sandbox stopped", "sandbox", spec.ID, "err", err, "stderr", stderr.String())
		}
		close(sb.done)
	}()

	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && strings.TrimSpace(line) != "ready" {
			err = fmt.Errorf("unexpected agent greeting %q", line)
		}
		ready <- err
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case err := <-ready:
		if err != nil {
			select { // let runsc finish saying why
			case <-sb.done:
			case <-time.After(5 * time.Second):
			}
			return nil, fmt.Errorf("sandbox %s did not start: %v: %s", spec.ID, err, stderr.String())
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("sandbox %s: agent not ready after 30s: %s", spec.ID, stderr.String())
	}
	// Only the agent has run so far: pin its socket (which the gofer made
	// on the host) now, before any code of the sandbox's can touch the name.
	if sb.ep, err = local.OpenEndpoint(filepath.Join(sb.dir, "run"), "agent.sock", uid, r.host.RootUID(slot)); err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", spec.ID, err)
	}
	sb.client = agent.NewClient(sb.ep.Dial)
	return sb, nil
}

func withDefaults(l sandbox.Limits) sandbox.Limits {
	l = l.WithDefaults(DefaultLimits)
	// Every guest process costs the sentry memory, inside the sandbox's
	// memory limit: a pids limit the memory cannot pay for would let a fork
	// bomb get the whole sentry OOM-killed. Allow about one process per MiB
	// above what the sentry needs for itself.
	l.Pids = max(min(l.Pids, (l.MemoryBytes-sentryReserve)/perProcessMemory), minPids)
	return l
}

// Sizing of the pids limit by memory (see withDefaults).
const (
	sentryReserve    = 48 << 20
	perProcessMemory = 1 << 20
	minPids          = sandbox.AgentReservedPids + 16
)

// flags are runsc's global flags for this runtime.
func (r *Runtime) flags(egress, image bool) []string {
	overlay := "root:self"
	if image {
		overlay = "none"
	}
	network := "none" // a network namespace with loopback only
	if egress {
		network = "sandbox" // the sentry's network stack on the namespace's eth0
	}
	return []string{
		"--root", r.root,
		"--platform", r.platform,
		"--network", network,
		// The agent creates its socket in /.berth/run: let the sentry make
		// it a host socket, which the host connects to.
		"--host-uds", "create",
		"--oci-seccomp",
		// An image's root is writable: the host's overlay takes the
		// writes, on the sandbox's disk (local.MountImageRoot), not
		// sentry memory.
		"--overlay2", overlay,
	}
}

// ids maps the sandbox's uids and gids to the host's: its root (the
// sentry and the gofer) to one host uid of the sandbox's, its user (1000,
// or an image's user) to the other; an image whose user is root has only
// the one. The ids of the sandbox's files follow (local.MountImageRoot).
type ids struct {
	user, group uint32 // in the sandbox
	uids, gids  []ociIDMapping
}

func newIDs(root *sandbox.Root, uid, rootUID uint32) ids {
	x := ids{user: sandboxUID, group: sandboxUID}
	if root != nil {
		x.user, x.group = root.UID, root.GID
	}
	m := func(id uint32) []ociIDMapping {
		if id == 0 {
			return []ociIDMapping{{ContainerID: 0, HostID: uid, Size: 1}}
		}
		return []ociIDMapping{{ContainerID: 0, HostID: rootUID, Size: 1}, {ContainerID: id, HostID: uid, Size: 1}}
	}
	x.uids, x.gids = m(x.user), m(x.group)
	return x
}

func (x ids) hostUID(id uint32) uint32 { return hostID(x.uids, id) }
func (x ids) hostGID(id uint32) uint32 { return hostID(x.gids, id) }

func hostID(m []ociIDMapping, id uint32) uint32 {
	for _, e := range m {
		if e.ContainerID == id {
			return e.HostID
		}
	}
	return 65534
}

// writeBundle writes the sandbox's OCI bundle: config.json and, on the
// host's root, an empty, read-only root directory holding only mount points
// and the /usr symlinks; on an image, root is the image's (writable) root.
func (r *Runtime) writeBundle(sb *box, spec sandbox.Spec, x ids, l sandbox.Limits) error {
	dir, root, ns, egress := sb.dir, sb.root, sb.netns, sb.egress
	id := spec.ID
	rootfs := filepath.Join(dir, "rootfs")
	if root != nil {
		rootfs = root.Dir
	} else if err := makeRootfs(rootfs, sb.binds); err != nil {
		return err
	}

	bind := func(src, dst string, rw bool) ociMount {
		mode := "ro"
		if rw {
			mode = "rw"
		}
		return ociMount{Destination: dst, Type: "bind", Source: src, Options: []string{"rbind", mode, "nosuid", "nodev"}}
	}
	mounts := []ociMount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid"}}, // the sentry's own devices
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "nodev", "mode=1777", "size=" + strconv.FormatInt(l.TmpBytes, 10)}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
	}
	if root == nil {
		// The host's /usr, and one read-only /etc, prepared once: see
		// local.PrepareEtc.
		mounts = append(mounts, bind("/usr", "/usr", false), bind(filepath.Join(r.host.Dir, "etc"), "/etc", false))
	}
	mounts = append(mounts,
		// The workspace and /tmp: the sandbox's own disk (local.MakeDisk).
		bind(filepath.Join(dir, "disk", local.DataDir), "/mnt/data", true),
		bind(filepath.Join(dir, "disk", local.TmpDir), "/tmp", true),
		bind(filepath.Join(dir, "run"), "/.berth/run", true),
		bind(r.host.Agent, "/.berth/agent", false),
	)
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "GOMAXPROCS=1"}
	if egress != nil {
		env = append(env, egress.Env...)
		if egress.CABundle != nil {
			if root == nil { // an image root has it already (local.Targets)
				if err := touchFile(filepath.Join(rootfs, sandbox.EgressCAPath)); err != nil {
					return err
				}
			}
			mounts = append(mounts, bind(filepath.Join(dir, local.EgressCAFile), sandbox.EgressCAPath, false))
		}
	}
	for _, m := range sb.binds {
		mounts = append(mounts, bind(m.Source, m.Target, !m.ReadOnly))
	}

	netNS := ociNamespace{Type: "network"}
	if ns != nil {
		netNS.Path = filepath.Join("/run/netns", ns.Name)
	}
	nproc := uint64(l.Pids)
	s := ociSpec{
		Version: "1.0.2",
		Process: ociProcess{
			User: ociUser{UID: x.user, GID: x.group},
			// RLIMIT_NPROC (below) counts the agent and the code it runs
			// alike, by user: the agent runs that code under a lower limit
			// (--max-procs), so that a fork bomb always leaves it room to
			// act. GOMAXPROCS=1 keeps its own thread count small.
			Args: []string{"/.berth/agent", "agent", "--socket", "/.berth/run/agent.sock",
				"--max-procs", strconv.FormatInt(sandbox.UserProcs(l.Pids), 10)},
			Env:             env,
			Cwd:             "/mnt/data",
			NoNewPrivileges: true,
			Capabilities:    &ociCapabilities{Bounding: []string{}, Effective: []string{}, Inheritable: []string{}, Permitted: []string{}, Ambient: []string{}},
			Rlimits: []ociRlimit{
				{Type: "RLIMIT_NPROC", Soft: nproc, Hard: nproc},
				{Type: "RLIMIT_NOFILE", Soft: 4096, Hard: 4096},
				{Type: "RLIMIT_CORE", Soft: 0, Hard: 0},
			},
		},
		Root:     ociRoot{Path: rootfs, Readonly: root == nil},
		Hostname: "sandbox",
		Mounts:   mounts,
		Linux: ociLinux{
			Namespaces: []ociNamespace{
				{Type: "pid"}, {Type: "ipc"}, {Type: "uts"}, {Type: "mount"}, {Type: "user"}, netNS,
			},
			UIDMappings: x.uids,
			GIDMappings: x.gids,
			CgroupsPath: "/" + r.host.Cgroups.Parent() + "/" + id,
			Seccomp: &ociSeccomp{
				DefaultAction: "SCMP_ACT_ALLOW",
				// The sentry's OCI seccomp answers denied calls with EPERM.
				// clone3 is not denied: glibc falls back to clone only on
				// ENOSYS.
				Syscalls: []ociSeccompRule{{Names: seccomp.Denied, Action: "SCMP_ACT_ERRNO"}},
			},
		},
	}
	b, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600)
}

// makeRootfs makes the root of a sandbox on the host's /usr: mount points
// and the /usr symlinks.
func makeRootfs(rootfs string, binds []local.Bind) error {
	for _, d := range []string{"", "usr", "proc", "dev", "sys", "tmp", "etc", "mnt/data", ".berth/run"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return err
		}
	}
	for _, s := range [][2]string{{"bin", "usr/bin"}, {"sbin", "usr/sbin"}, {"lib", "usr/lib"}, {"lib64", "usr/lib64"}} {
		if err := os.Symlink(s[1], filepath.Join(rootfs, s[0])); err != nil {
			return err
		}
	}
	if err := touchFile(filepath.Join(rootfs, ".berth/agent")); err != nil {
		return err
	}
	for _, m := range binds {
		if err := os.MkdirAll(filepath.Join(rootfs, m.Target), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// touchFile makes an empty file at p (a mount point for a file).
func touchFile(p string) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// runscCmd runs a runsc subcommand against this runtime's state.
func (r *Runtime) runscCmd(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, r.runsc, append([]string{"--root", r.root}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("runsc %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errOut.String()))
	}
	return out.Bytes(), nil
}

// hasState reports whether runsc still holds state for container id.
func (r *Runtime) hasState(id string) bool {
	m, _ := filepath.Glob(filepath.Join(r.root, id+"_sandbox:*"))
	return len(m) > 0
}

// deleteContainer removes what runsc keeps of container id, stopping it
// first if it still runs.
func (r *Runtime) deleteContainer(ctx context.Context, id string) error {
	if !r.hasState(id) {
		return nil
	}
	_, err := r.runscCmd(ctx, "delete", "--force", id)
	if err != nil && !r.hasState(id) {
		return nil // it went away on its own meanwhile
	}
	return err
}

// Cleanup implements sandbox.Runtime: it removes every container in this
// instance's runsc state, kills runsc processes left running on that state
// (sandboxes, gofers, and the "runsc run" parents), then the cgroups,
// sandbox directories and network namespaces.
func (r *Runtime) Cleanup(ctx context.Context) error {
	var errs []error
	out, err := r.runscCmd(ctx, "list", "--quiet")
	if err != nil {
		r.log.Warn("list gVisor containers", "err", err)
	}
	for _, id := range strings.Fields(string(out)) {
		if err := r.deleteContainer(ctx, id); err != nil {
			r.log.Warn("delete gVisor container", "container", id, "err", err)
		}
	}
	killStrays(r.root)
	if err := r.host.Cleanup(); err != nil {
		errs = append(errs, err)
	}
	removeOtherCgroups(r.host.Cgroups.Parent())
	// runsc's own mounts in its state (the gofers' empty network
	// namespace), and what it could not delete (a container whose state is
	// corrupt).
	local.UnmountUnder(r.root)
	entries, _ := os.ReadDir(r.root)
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(r.root, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	if err := r.net.Cleanup(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// killStrays kills every process started with "--root root", the runsc
// state directory of one instance: runsc parents, sandboxes and gofers.
func killStrays(root string) {
	for range 20 {
		pids := processesUsing(root)
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func processesUsing(root string) []int {
	var out []int
	self := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		for i, a := range args {
			if a == "--root="+root || a == "-root="+root ||
				((a == "--root" || a == "-root") && i+1 < len(args) && args[i+1] == root) {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// removeOtherCgroups removes the groups that runsc made for sandboxes under
// parent in the cgroup v1 hierarchies that the cgroup manager does not own
// (cpuacct, cpuset, devices, freezer…), and parent itself there if it is
// empty. runsc removes them when a sandbox ends normally; a crash leaves
// them behind.
func removeOtherCgroups(parent string) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[2] != "cgroup" {
			continue
		}
		opts := "," + f[3] + ","
		if strings.Contains(opts, ",memory,") || strings.Contains(opts, ",pids,") || strings.Contains(opts, ",cpu,") {
			continue // the manager's own
		}
		dir := filepath.Join(f[1], parent)
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.IsDir() {
				rmdirRetry(filepath.Join(dir, e.Name()))
			}
		}
		_ = syscall.Rmdir(dir)
	}
}

func rmdirRetry(dir string) {
	for i := 0; i < 20; i++ {
		if err := syscall.Rmdir(dir); err == nil || errors.Is(err, syscall.ENOENT) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var (
	_ sandbox.Runtime       = (*Runtime)(nil)
	_ sandbox.StatsReporter = (*box)(nil)
)

// box is one gVisor sandbox.
type box struct {
	id     string
	rt     *Runtime
	slot   int
	dir    string
	disk   *local.Disk
	root   *local.ImageRoot
	binds  []local.Bind // spec's volumes and files
	cg     *cgroup.Group
	netns  *netns.Namespace
	egress *sandbox.EgressAttachment
	cmd    *exec.Cmd // runsc run
	ep     *local.Endpoint
	client *agent.Client
	done   chan struct{}
	once   sync.Once
	// stopping is set once Destroy (or a failed Start) stops the sandbox.
	stopping atomic.Bool
}

func (b *box) ID() string            { return b.id }
func (b *box) Agent() *agent.Client  { return b.client }
func (b *box) Done() <-chan struct{} { return b.done }
func (b *box) Destroy(context.Context) error {
	b.teardown()
	return nil
}

// Stats implements sandbox.StatsReporter. The memory is the whole sandbox's:
// its processes, its tmpfs files and the sentry. An OOM kill is the host
// kernel killing the sentry, which ends the sandbox.
func (b *box) Stats() sandbox.Stats {
	return local.DiskStats(local.Stats(b.cg), b.disk)
}

func (b *box) teardown() {
	b.once.Do(func() {
		b.stopping.Store(true)
		if b.client != nil {
			b.client.Close()
		}
		if b.ep != nil {
			b.ep.Close()
		}
		if b.cg != nil {
			// The sentry, the gofer and systrap's stubs are all in the
			// group: killing them ends the sandbox, and "runsc run" then
			// removes the container's state and exits.
			b.cg.Kill()
		}
		if b.cmd != nil && b.cmd.Process != nil {
			select {
			case <-b.done:
			case <-time.After(10 * time.Second):
				b.rt.log.Warn("runsc did not exit; killing it", "sandbox", b.id)
				_ = b.cmd.Process.Kill()
				<-b.done
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := b.rt.deleteContainer(ctx, b.id); err != nil {
			b.rt.log.Warn("delete gVisor container", "sandbox", b.id, "err", err)
		}
		if b.cg != nil {
			b.cg.Destroy()
		}
		if b.egress != nil {
			b.egress.Close()
		}
		if b.netns != nil {
			if err := b.netns.Close(); err != nil {
				b.rt.log.Warn("remove network namespace", "sandbox", b.id, "err", err)
			}
		}
		b.root.Unmount()
		b.disk.Unmount()
		if b.dir != "" {
			if err := os.RemoveAll(b.dir); err != nil {
				b.rt.log.Warn("remove sandbox directory", "sandbox", b.id, "err", err)
			}
		}
		b.rt.host.Release(b.slot)
	})
}
