// Package sandbox defines the runtime that Berth's session pools (and, later,
// its app replicas) run untrusted code in, independent of how a sandbox is
// made. A Runtime starts sandboxes; each Sandbox runs Berth's agent, which
// is how everything else talks to it. Drivers live in sub-packages: bwrap
// (bubblewrap, the default) and gvisor (gVisor's runsc).
package sandbox

import (
	"context"
	"errors"
	"net/netip"

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
	// Mounts are host directories to bind into the sandbox (an app's files,
	// its volumes). Their parents must be traversable by the sandbox's uid.
	Mounts []Mount
	// UID, if not zero, is the unprivileged host uid to run as, instead of
	// one of the sandbox's own: replicas of one app share theirs, so that
	// they can share a volume.
	UID uint32
}

// Mount binds a host directory into a sandbox.
type Mount struct {
	Source   string
	Target   string
	ReadOnly bool
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
