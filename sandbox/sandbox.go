// Package sandbox defines the runtime that Berth's session pools (and, later,
// its app replicas) run untrusted code in, independent of how a sandbox is
// made. A Runtime starts sandboxes; each Sandbox runs Berth's agent, which
// is how everything else talks to it. Drivers live in sub-packages: bwrap
// (bubblewrap, the default), gvisor (gVisor's runsc) and kube (Pods on a
// Kubernetes cluster).
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/berth-dev/berth/agent"
)

// Limits bounds a sandbox's resources. Zero fields take the driver's
// defaults.
type Limits struct {
	MemoryBytes int64
	CPU         float64 // cores
	Pids        int64
	// TmpBytes bounds the in-memory /dev/shm (where a driver has one).
	TmpBytes int64
	// DiskBytes bounds the sandbox's writable space on disk: its workspace
	// (/mnt/data) and /tmp together, in bytes and, in proportion, in files.
	DiskBytes int64
}

// WithDefaults returns l with its zero fields taken from d.
func (l Limits) WithDefaults(d Limits) Limits {
	if l.MemoryBytes <= 0 {
		l.MemoryBytes = d.MemoryBytes
	}
	if l.CPU <= 0 {
		l.CPU = d.CPU
	}
	if l.Pids <= 0 {
		l.Pids = d.Pids
	}
	if l.TmpBytes <= 0 {
		l.TmpBytes = d.TmpBytes
	}
	if l.DiskBytes <= 0 {
		l.DiskBytes = d.DiskBytes
	}
	return l
}

// AgentReservedPids is how much of a sandbox's pids limit is kept for the
// agent: user code runs under RLIMIT_NPROC = Pids - AgentReservedPids, so
// that a fork bomb cannot stop the agent from killing it.
const AgentReservedPids = 32

// UserProcs is the process limit of user code in a sandbox with limit pids.
func UserProcs(pids int64) int64 { return max(pids-AgentReservedPids, 8) }

// Spec describes a sandbox to start.
type Spec struct {
	// ID names the sandbox; it is unique among live sandboxes of a runtime
	// and made of [a-z0-9-].
	ID     string
	Limits Limits
	// Egress gives the sandbox a network interface with NAT to the outside
	// (never to the host's own services). Without it the sandbox has only
	// loopback.
	Egress bool
	// EgressProxy, with Egress, replaces the sandbox's route out: it gets
	// no NAT, only the proxy's listeners on the host side of its veth (and
	// its ports 80, 443 and 53 redirected to them), so that everything it
	// sends out passes the proxy's rules.
	EgressProxy EgressProxy
	// Group, if set, names the sandboxes that share Volumes (an app's
	// replicas: "app/NAME"). A driver gives the sandboxes of a group one
	// identity, so that what one writes to a volume the others can read
	// and write; the local drivers map it to a stable unprivileged host uid
	// of their own choosing. Without it, a sandbox shares nothing.
	Group string
	// Volumes are the Group's named volumes: directories that outlive the
	// sandbox, shared by the group's sandboxes. Where and how they are kept
	// is the driver's business (see Runtime.RemoveVolumes).
	Volumes []Volume
	// Files are trees of the caller's own files the sandbox sees,
	// read-only: an app revision's source, its secret volume.
	Files []Files
	// Root, if set, is the sandbox's root file system: an OCI image's
	// unpacked root instead of the host's /usr. Without it the sandbox runs
	// on the host's read-only /usr and a curated /etc.
	Root *Root
	// Image is the OCI image reference the sandbox's root comes from
	// (pinned by digest where the caller resolved one), for drivers that
	// pull images themselves, such as kube: they run it and ignore Root.Dir
	// (Root, if set, still names the image's user). Local drivers ignore
	// Image and use Root. A pulling driver given no Image runs its own
	// default image.
	Image string
	// Owner is whom the sandbox runs for (zero: nobody in particular). A
	// sandbox with an owner is connected to the app-to-app tunnel, which
	// tells the apps it calls who it is (see package workload).
	Owner Owner
}

// Owner is the app (Kind "app") or pool ("pool") a sandbox runs for.
type Owner struct {
	Kind, Name string
}

// ImageIDShift is what Berth's image store adds to every uid and gid of an
// image's files when it unpacks them, so that no file of an image is ever
// owned by a host user (uid 1000 is a real user on many hosts): image uid
// n is host uid ImageIDShift+n on disk. It is clear of the sandboxes' own
// host uids (local.Options.UIDBase: 1,000,000 to about 270,000,000) and
// leaves room for every 16-bit image uid below 2^31.
const ImageIDShift = 1_500_000_000

// Root is an image's unpacked root file system for a sandbox.
//
// The directory is shared, read-only, by every sandbox of the image and is
// never written: each sandbox sees it through a kernel overlay whose upper
// layer is on the sandbox's own disk (so writes to the root count against
// Limits.DiskBytes and vanish with the sandbox), over an idmapped mount of
// Dir that shows the files of image uid/gid UID/GID as the sandbox's own
// unprivileged host uid, and those of image root as a second host uid of
// the sandbox's (see the drivers' doc comments). The sandbox's processes
// run as UID:GID inside and as their own host uid outside: never as host
// root, never as the uid the image's files carry on disk.
//
// The image's Env and WorkingDir are the caller's to apply: an app's
// command runs through the agent with the environment and directory its
// service spec names (agent.ServiceSpec), and a pool's shell and Python run
// with the agent's own environment (PATH covers /usr/local/bin).
type Root struct {
	// Dir is the host path of the unpacked root (absolute).
	Dir string
	// IDShift is what the image store added to the image's uids and gids
	// (ImageIDShift for Berth's store).
	IDShift uint32
	// UID and GID are the image user (and group) the sandbox's processes
	// run as, resolved from the image's own /etc/passwd and /etc/group.
	UID, GID uint32
}

// MaxImageID bounds Root.UID and Root.GID.
const MaxImageID = 1<<16 - 1

// Check reports what is wrong with r, if anything.
func (r *Root) Check() error {
	switch {
	case r == nil:
		return nil
	case !strings.HasPrefix(r.Dir, "/") || strings.ContainsAny(r.Dir, ",:\\\x00\n"):
		return fmt.Errorf("image root %q: not an absolute path of plain characters", r.Dir)
	case r.UID > MaxImageID || r.GID > MaxImageID:
		return fmt.Errorf("image user %d:%d: above %d", r.UID, r.GID, MaxImageID)
	case uint64(r.IDShift)+MaxImageID >= 1<<32-1:
		return fmt.Errorf("image id shift %d too large", r.IDShift)
	}
	return nil
}

// Volume is a named volume of a sandbox's Group, at Path in the sandbox.
// Name is made of [a-z0-9-] and unique in the group.
type Volume struct {
	Name string
	Path string
}

// Files gives a sandbox a tree of the caller's files, read-only, at
// Target.
type Files struct {
	// Dir is the tree on Berth's own host, private to Berth (readable by
	// root only); it must stay unchanged while sandboxes use it. The driver
	// makes it readable to the sandbox: a local driver hands it to the
	// sandbox's host uid, private to that uid, and binds it. So sandboxes
	// of one Group may share a tree; sandboxes of different groups must not.
	Dir    string
	Target string
}

// Sandbox is one running sandbox.
type Sandbox interface {
	ID() string
	// Agent is the client for the agent inside the sandbox.
	Agent() *agent.Client
	// Done is closed when the sandbox has stopped, on its own or by Destroy.
	Done() <-chan struct{}
	// Destroy stops the sandbox and removes everything it used. It is safe
	// to call more than once.
	Destroy(ctx context.Context) error
}

// Stats are optional measurements a sandbox may offer.
type Stats struct {
	// OOMKills counts processes killed for exceeding the memory limit.
	OOMKills uint64
	// MemoryBytes is the sandbox's current memory use.
	MemoryBytes uint64
	// Pids is the number of tasks in the sandbox, PidsLimit its limit
	// (0 if unknown).
	Pids, PidsLimit int64
	// DiskBytes and DiskInodes are the sandbox's disk use (workspace and
	// /tmp), DiskLimitBytes and DiskInodesLimit its size (0 if unknown).
	DiskBytes, DiskLimitBytes   int64
	DiskInodes, DiskInodesLimit int64
	// CPUTime is the CPU time the sandbox's processes have used (for
	// gVisor: the sentry's, gofer's and their helpers').
	CPUTime time.Duration
}

// DiskFull reports whether the sandbox's disk has (nearly) no room left,
// in bytes or in files: a write that failed then failed for want of space.
func (s Stats) DiskFull() bool {
	if s.DiskLimitBytes <= 0 {
		return false
	}
	room := s.DiskLimitBytes - s.DiskBytes
	return room < max(s.DiskLimitBytes/100, 1<<20) || s.DiskInodesLimit-s.DiskInodes <= max(s.DiskInodesLimit/1000, 1)
}

// DefaultDiskBytes is a sandbox's disk when its limits name none.
const DefaultDiskBytes = 1 << 30

// ErrExists means Start was given the ID of a sandbox that exists already
// (another Berth replica may have started it: a driver that shares its
// sandboxes between replicas can attach to it instead).
var ErrExists = errors.New("sandbox exists already")

// ErrNotFound means no sandbox has that ID (Attach of a shared driver).
var ErrNotFound = errors.New("no such sandbox")

// ErrNoCapacity means the host cannot take another sandbox of that size
// now: the sandboxes it runs already hold what it admits. It is temporary.
var ErrNoCapacity = errors.New("host at capacity")

// StatsReporter is implemented by sandboxes that can measure themselves.
type StatsReporter interface {
	Stats() Stats
}

// Runtime starts sandboxes.
type Runtime interface {
	// Name is the driver's name ("bwrap", "gvisor").
	Name() string
	// Start starts a sandbox and returns once its agent answers.
	Start(ctx context.Context, spec Spec) (Sandbox, error)
	// Cleanup removes everything that an earlier process using the same
	// state left behind: processes, cgroups, network namespaces, files.
	Cleanup(ctx context.Context) error
	// RemoveVolumes removes the volumes of group (Spec.Volumes), once no
	// sandbox of the group runs. Removing none is not an error.
	RemoveVolumes(ctx context.Context, group string) error
}

// Unwrap returns the runtimes rt wraps, outermost first, rt itself
// included: a runtime that adds to another's sandboxes (admission, the
// app-to-app tunnel) has an Unwrap() Runtime method, so that a caller can
// find an optional method of the driver underneath.
func Unwrap(rt Runtime) []Runtime {
	var all []Runtime
	for rt != nil {
		all = append(all, rt)
		u, ok := rt.(interface{ Unwrap() Runtime })
		if !ok {
			break
		}
		rt = u.Unwrap()
	}
	return all
}

// ErrUnavailable means a driver cannot run on this host (a tool is missing,
// or the kernel lacks a feature); its message says what to install.
var ErrUnavailable = errors.New("sandbox runtime unavailable")

// EgressProxy serves the egress of sandboxes with egress rules.
type EgressProxy interface {
	// Attach starts serving one sandbox: gw is the host side of its veth
	// (where the proxy listens), peer the sandbox's own address.
	Attach(ctx context.Context, gw, peer netip.Addr) (*EgressAttachment, error)
}

// EgressAttachment is what a driver gives a sandbox whose egress a proxy
// serves.
type EgressAttachment struct {
	// Env is set for the sandbox's processes (HTTPS_PROXY, SSL_CERT_FILE…).
	Env []string
	// CABundle, if not nil, is placed read-only at EgressCAPath.
	CABundle []byte
	// Close stops serving the sandbox.
	Close func()
}

// EgressCAPath is where a sandbox finds the certificates it trusts for
// egress through the proxy.
const EgressCAPath = "/.berth/egress-ca.pem"
