// Package bwrap is the default sandbox driver: bubblewrap with every
// namespace unshared, the host's /usr read-only as the root file system, a
// private /tmp and workspace, all capabilities dropped, no-new-privs, a
// seccomp filter, an unprivileged host uid per sandbox and a cgroup per
// sandbox for memory, pids and CPU.
//
// On an image (sandbox.Spec.Root) the root is instead the image's, made by
// the host before bubblewrap starts (local.MountImageRoot: an idmapped
// mount of the shared image root under an overlay whose upper layer is on
// the sandbox's disk) and bound writable at /; bubblewrap 0.8.0 has no
// overlay options and cannot make mount points in a read-only root, so the
// host makes those too. The sandbox runs as the image user inside its user
// namespace, which maps it to the sandbox's own host uid: the uid the
// idmapped mount shows the image user's files as. Everything else (the
// namespaces, seccomp, cgroup, /tmp, /mnt/data, the agent) is as on the
// host's root.
package bwrap

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

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
	// Bwrap is the bubblewrap binary (default: "bwrap" on $PATH).
	Bwrap  string
	Logger *slog.Logger
}

// Defaults applied to zero limits.
var DefaultLimits = sandbox.Limits{MemoryBytes: 512 << 20, CPU: 1, Pids: 256, TmpBytes: 256 << 20, DiskBytes: sandbox.DefaultDiskBytes}

// Runtime is the bubblewrap driver.
type Runtime struct {
	host  *local.Host
	bwrap string
	log   *slog.Logger
	net   *netns.Manager
}

// New checks for bubblewrap and prepares the host.
func New(o Options) (*Runtime, error) {
	if o.Bwrap == "" {
		o.Bwrap = "bwrap"
	}
	path, err := exec.LookPath(o.Bwrap)
	if err != nil {
		return nil, fmt.Errorf("%w: bubblewrap not found (apt-get install bubblewrap): %v", sandbox.ErrUnavailable, err)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	host, err := local.NewHost("bwrap", o.Options)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", sandbox.ErrUnavailable, err)
	}
	if err := local.PrepareEtc(filepath.Join(host.Dir, "etc")); err != nil {
		return nil, fmt.Errorf("prepare the sandboxes' /etc: %w", err)
	}
	return &Runtime{host: host, bwrap: path, log: o.Logger, net: netns.New(host.Instance + "w")}, nil
}

// Name implements sandbox.Runtime.
func (r *Runtime) Name() string { return "bwrap" }

// RemoveVolumes implements sandbox.Runtime.
func (r *Runtime) RemoveVolumes(_ context.Context, group string) error {
	return r.host.RemoveVolumes(group)
}

// Cleanup implements sandbox.Runtime.
func (r *Runtime) Cleanup(ctx context.Context) error {
	if err := r.host.Cleanup(); err != nil {
		return err
	}
	return r.net.Cleanup(ctx)
}

// Start implements sandbox.Runtime.
func (r *Runtime) Start(ctx context.Context, spec sandbox.Spec) (_ sandbox.Sandbox, err error) {
	l := spec.Limits.WithDefaults(DefaultLimits)
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

	// The directory is not named after the sandbox: its path shows in the
	// sandbox's mountinfo (bind mount sources), and the sandbox has no
	// business knowing its name.
	if sb.dir, err = r.host.MakeSandboxDir(rand.Text()[:16], uid); err != nil {
		return nil, err
	}
	if sb.disk, err = r.host.MakeDisk(sb.dir, l.DiskBytes, uid); err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", spec.ID, err)
	}
	if sb.binds, err = r.host.Binds(spec, uid); err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", spec.ID, err)
	}
	if slot >= local.RootUIDOffset {
		return nil, fmt.Errorf("sandbox %s: too many sandboxes", spec.ID)
	}
	if spec.Root != nil {
		ids := local.RootIDs{UID: uid, GID: uid, RootUID: r.host.RootUID(slot), RootGID: r.host.RootUID(slot)}
		if sb.root, err = r.host.MountImageRoot(sb.dir, sb.disk, spec.Root, ids, local.Targets(spec, sb.binds)); err != nil {
			return nil, fmt.Errorf("sandbox %s: %w", spec.ID, err)
		}
	}
	if sb.cg, err = r.host.Cgroups.Create(spec.ID, cgroup.Limits{MemoryBytes: l.MemoryBytes, Pids: l.Pids, CPU: l.CPU}); err != nil {
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

	filter, err := seccomp.Program()
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	seccompFile, err := memfd("berth-seccomp", filter)
	if err != nil {
		return nil, err
	}
	defer seccompFile.Close()
	blockR, blockW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer blockR.Close()
	defer blockW.Close()
	infoR, infoW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer infoR.Close()
	defer infoW.Close()

	// bubblewrap reads its arguments from fd 6, so that its command line
	// (which the sandbox sees as /proc/1/cmdline) names no host path.
	opts, command := r.args(sb, l, spec)
	argsFile, err := memfd("berth-bwrap-args", []byte(strings.Join(opts, "\x00")+"\x00"))
	if err != nil {
		return nil, err
	}
	defer argsFile.Close()
	args := append([]string{"--args", "6", "--"}, command...)
	cred := &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}
	cmd := exec.Command(r.bwrap, args...)
	if sb.netns != nil {
		// bubblewrap cannot join a network namespace itself: "ip netns exec"
		// (root) enters it and setpriv drops to the sandbox's uid.
		id := strconv.Itoa(int(uid))
		cmd = exec.Command("ip", append([]string{"netns", "exec", sb.netns.Name,
			"setpriv", "--reuid", id, "--regid", id, "--clear-groups", r.bwrap}, args...)...)
		cred = nil
	}
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}
	cmd.ExtraFiles = []*os.File{seccompFile, blockR, infoW, argsFile} // fds 3, 4, 5 and 6
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL, Setsid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr local.Tail
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start bwrap: %w", err)
	}
	sb.cmd = cmd
	infoW.Close()
	go func() {
		_ = cmd.Wait()
		close(sb.done)
	}()
	// bubblewrap reports the sandbox's first process on fd 5 once it has
	// cloned it, and that process then waits on fd 4 before running
	// anything of ours: move both (and anything they forked) into the
	// cgroup before letting it go, so that everything the sandbox ever
	// starts is accounted and limited.
	var info struct {
		ChildPid int `json:"child-pid"`
	}
	if err := json.NewDecoder(infoR).Decode(&info); err != nil || info.ChildPid <= 0 {
		<-sb.done
		return nil, fmt.Errorf("sandbox %s did not start: no child pid from bwrap (%v): %s", spec.ID, err, stderr.String())
	}
	// (bubblewrap reads fd 4 before it forks its init, so these two are
	// all the processes there are.)
	for _, pid := range []int{cmd.Process.Pid, info.ChildPid} {
		if err := sb.cg.Add(pid); err != nil {
			select { // it died: let bubblewrap say why
			case <-sb.done:
			case <-time.After(time.Second):
			}
			return nil, fmt.Errorf("sandbox %s did not start: %v: %s", spec.ID, err, stderr.String())
		}
	}
	if _, err := blockW.Write([]byte{1}); err != nil {
		return nil, fmt.Errorf("release bwrap: %w", err)
	}

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
			<-sb.done
			return nil, fmt.Errorf("sandbox %s did not start: %v: %s", spec.ID, err, stderr.String())
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("sandbox %s: agent not ready after 30s: %s", spec.ID, stderr.String())
	}
	// Only the agent has run so far: pin its socket now, before any
	// code of the sandbox's can touch the name.
	if sb.ep, err = local.OpenEndpoint(filepath.Join(sb.dir, "run"), "agent.sock", uid); err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", spec.ID, err)
	}
	sb.client = agent.NewClient(sb.ep.Dial)
	return sb, nil
}

// args returns bubblewrap's options and the command it runs.
func (r *Runtime) args(sb *box, l sandbox.Limits, spec sandbox.Spec) (opts, command []string) {
	dir, root := sb.dir, sb.root
	uid, gid := "1000", "1000"
	if spec.Root != nil {
		uid, gid = strconv.FormatUint(uint64(spec.Root.UID), 10), strconv.FormatUint(uint64(spec.Root.GID), 10)
	}
	a := []string{
		"--unshare-all", "--unshare-user", "--disable-userns",
		"--die-with-parent", "--new-session", "--cap-drop", "ALL",
		"--uid", uid, "--gid", gid, "--hostname", "sandbox",
	}
	if root != nil {
		// The image's root, writable through its overlay (whose upper
		// layer is on the sandbox's disk), with its own /etc.
		a = append(a, "--bind", root.Dir, "/")
	} else {
		a = append(a, "--ro-bind", "/usr", "/usr",
			"--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
			"--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64")
	}
	a = append(a, "--proc", "/proc", "--dev", "/dev",
		// /dev/shm (POSIX shared memory, semaphores) is the one writable
		// place in memory, bounded as gVisor's is.
		"--size", strconv.FormatInt(l.TmpBytes, 10), "--tmpfs", "/dev/shm")
	if root == nil {
		a = append(a, "--ro-bind", filepath.Join(r.host.Dir, "etc"), "/etc")
	}
	if spec.Egress {
		a = append(a, "--share-net")
	}
	for _, m := range sb.binds {
		flag := "--bind"
		if m.ReadOnly {
			flag = "--ro-bind"
		}
		a = append(a, flag, m.Source, m.Target)
	}
	a = append(a,
		// The workspace and /tmp: the sandbox's own disk (local.MakeDisk).
		"--bind", filepath.Join(dir, "disk", local.DataDir), "/mnt/data",
		"--bind", filepath.Join(dir, "disk", local.TmpDir), "/tmp",
		"--bind", filepath.Join(dir, "run"), "/.berth/run",
		"--ro-bind", r.host.Agent, "/.berth/agent",
		"--chdir", "/mnt/data",
		"--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", "/tmp",
	)
	a = append(a, egressArgs(sb.egress, dir)...)
	a = append(a,
		// Nothing else is writable: the root and /dev tmpfs would be
		// writable space outside the disk's quota. (An image's root is
		// writable: its overlay's upper layer is on that disk.)
		"--remount-ro", "/dev",
	)
	if root == nil {
		a = append(a, "--remount-ro", "/")
	}
	a = append(a, "--seccomp", "3", "--block-fd", "4", "--info-fd", "5")
	return a, []string{"/.berth/agent", "agent", "--socket", "/.berth/run/agent.sock",
		"--max-procs", strconv.FormatInt(sandbox.UserProcs(l.Pids), 10)}
}

// box is one bubblewrap sandbox.
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
	cmd    *exec.Cmd
	ep     *local.Endpoint
	client *agent.Client
	done   chan struct{}
	once   sync.Once
}

func (b *box) ID() string            { return b.id }
func (b *box) Agent() *agent.Client  { return b.client }
func (b *box) Done() <-chan struct{} { return b.done }
func (b *box) Destroy(context.Context) error {
	b.teardown()
	return nil
}

func (b *box) Stats() sandbox.Stats {
	return local.DiskStats(local.Stats(b.cg), b.disk)
}

func (b *box) teardown() {
	b.once.Do(func() {
		if b.client != nil {
			b.client.Close()
		}
		if b.ep != nil {
			b.ep.Close()
		}
		if b.cg != nil {
			b.cg.Kill()
		}
		if b.cmd != nil && b.cmd.Process != nil {
			_ = b.cmd.Process.Kill()
			<-b.done
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

func memfd(name string, content []byte) (*os.File, error) {
	// Close-on-exec: cmd.ExtraFiles hands it to this one bubblewrap only;
	// without it, every process the server starts meanwhile (other
	// sandboxes' bubblewrap and runsc) would inherit it.
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	if _, err := f.Write(content); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// egressArgs give the sandbox what its egress proxy asks for: environment
// (after --clearenv) and the CA bundle (before the root is read-only).
func egressArgs(att *sandbox.EgressAttachment, dir string) []string {
	if att == nil {
		return nil
	}
	var a []string
	for _, kv := range att.Env {
		k, v, _ := strings.Cut(kv, "=")
		a = append(a, "--setenv", k, v)
	}
	if att.CABundle != nil {
		a = append(a, "--ro-bind", filepath.Join(dir, local.EgressCAFile), sandbox.EgressCAPath)
	}
	return a
}
