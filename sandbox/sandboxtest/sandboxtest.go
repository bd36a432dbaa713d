// Package sandboxtest is the conformance suite of sandbox drivers: Run
// checks, against real sandboxes of a driver, what every sandbox.Runtime
// must do (exec, state, limits, writable and read-only places, egress off
// and on, ports, volumes and files, Destroy and Done, image roots, stats,
// hostile basics). Every driver's tests call it, with the same table of
// subtests for all.
//
// The suite assumes nothing of the host: a driver declares what it cannot
// do (Caps; the subtests that need it are skipped, saying why), and what
// can only be seen from a local host (processes' host uids, leftovers after
// Destroy, a crash) goes through optional hooks (Host), which the local
// drivers get from LocalHost.
package sandboxtest

import (
	"context"
	"crypto/rand"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/sandbox"
)

// Caps are things a driver may be unable to do.
type Caps uint

const (
	// HostRoot: sandboxes without an image (Spec.Root nil), on the host's
	// read-only /usr and a curated /etc.
	HostRoot Caps = 1 << iota
	// ImageRoots: sandboxes on an unpacked image root (Spec.Root).
	ImageRoots
	// Egress: Spec.Egress gives the sandbox a route out.
	Egress
	// TmpLimit: Limits.TmpBytes bounds /dev/shm.
	TmpLimit
	// Stats: sandboxes implement sandbox.StatsReporter.
	Stats
	// DiskQuota: a write past Limits.DiskBytes fails with ENOSPC and the
	// sandbox lives on (Kubernetes evicts a Pod over its ephemeral
	// storage instead).
	DiskQuota
	// GroupVolumes: Spec.Volumes, shared by a group.
	GroupVolumes
	// CallerFiles: Spec.Files, the caller's trees shown read-only.
	CallerFiles
	// LoopbackOnly: a sandbox without egress has no network interface but
	// loopback (a Pod always has one; its egress is refused by policy,
	// which the driver's own tests prove).
	LoopbackOnly
	// CodeSeccomp: code runs under a system call filter (Seccomp: 2) that
	// refuses new namespaces. (gVisor on the kube test cluster does not
	// apply the OCI profile; its sentry is the boundary.)
	CodeSeccomp
)

var capNames = map[Caps]string{HostRoot: "HostRoot", ImageRoots: "ImageRoots", Egress: "Egress", TmpLimit: "TmpLimit", Stats: "Stats",
	DiskQuota: "DiskQuota", GroupVolumes: "GroupVolumes", CallerFiles: "CallerFiles", LoopbackOnly: "LoopbackOnly", CodeSeccomp: "CodeSeccomp"}

func (c Caps) String() string {
	var names []string
	for b, n := range capNames {
		if c&b != 0 {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return strings.Join(names, "|")
}

// Driver is what the suite runs against.
type Driver struct {
	// New returns a fresh runtime of the driver, with state of its own,
	// for one subtest; the driver's test cleans it up when tb ends.
	New func(tb testing.TB) Runtime
	// Lacks is what the driver cannot do.
	Lacks Caps
	// Network, if set, stands for the world outside the sandboxes' host
	// (see LocalNetwork); without it the egress subtests are skipped.
	Network Network
}

// Runtime is a runtime under test, with the hooks that look at it from
// outside.
type Runtime struct {
	sandbox.Runtime
	// Host looks at the runtime's sandboxes from their host (nil: the
	// checks it serves are skipped, saying so).
	Host Host
	// Reopen, if set, returns a second runtime on the same state, as a
	// restarted server makes: its Cleanup must remove what the first one
	// runs.
	Reopen func(tb testing.TB) sandbox.Runtime
}

// Host looks at sandboxes from the machine they run on.
type Host interface {
	// CheckUIDs fails tb if a process of sb runs as a host uid it must
	// not (host root, a host user's, an image file owner's).
	CheckUIDs(tb testing.TB, sb sandbox.Sandbox)
	// UIDs are the host uids of sb's processes.
	UIDs(tb testing.TB, sb sandbox.Sandbox) map[uint32]bool
	// Kill kills sb from outside, as a crash would.
	Kill(tb testing.TB, sb sandbox.Sandbox)
	// Leftovers lists what of sb is on its host: processes, cgroups,
	// mounts, files, devices. It names something while sb runs, and
	// nothing once Destroy returned.
	Leftovers(tb testing.TB, sb sandbox.Sandbox) []string
	// Processes counts sb's processes as its host sees them.
	Processes(tb testing.TB, sb sandbox.Sandbox) int
	// ProcessLimits returns /proc/PID/limits of sb's process whose
	// command line starts with cmdline (NUL-separated), ok false where
	// sb's processes are not the host's (gVisor's are the sentry's).
	ProcessLimits(tb testing.TB, sb sandbox.Sandbox, cmdline string) (limits string, ok bool)
}

// Network is the world outside the sandboxes' host.
type Network interface {
	// Outside starts a TCP server that stands for the internet and
	// returns its address (host:port); it answers every connection with
	// "hello PEER\n", PEER the address it saw.
	Outside(tb testing.TB) string
	// Forbidden returns addresses (host:port, each with a listener) that
	// no sandbox may reach, with egress or without: the host's own.
	Forbidden(tb testing.TB) []string
}

// subtest is one check of the suite.
type subtest struct {
	name string
	// needs is what the driver must be able to do.
	needs Caps
	run   func(t *testing.T, d Driver, rt Runtime)
}

// Run runs the suite against d: every subtest, each on a fresh runtime.
func Run(t *testing.T, d Driver) {
	for _, st := range suite() {
		t.Run(st.name, func(t *testing.T) {
			if lacks := d.Lacks & st.needs; lacks != 0 {
				t.Skipf("the driver lacks %v", lacks)
			}
			st.run(t, d, d.New(t))
		})
	}
}

// suite is the table of subtests.
func suite() []subtest {
	return []subtest{
		{"Exec", 0, testExec},
		{"Timeout", 0, testTimeout},
		{"FileAPI", 0, testFileAPI},
		{"Identity", 0, testIdentity},
		{"HostRoot", HostRoot, testHostRoot},
		{"Writable", 0, testWritable},
		{"DiskLimit", DiskQuota, testDiskLimit},
		{"TmpLimit", TmpLimit, testTmpLimit},
		{"MemoryLimit", 0, testMemoryLimit},
		{"PidsLimit", 0, testPidsLimit},
		{"Stats", Stats, testStats},
		{"NoEgress", 0, testNoEgress},
		{"Egress", Egress, testEgress},
		{"Ports", 0, testPorts},
		{"Volumes", GroupVolumes, testVolumes},
		{"Files", CallerFiles, testFiles},
		{"Hostile", 0, testHostile},
		{"Destroy", 0, testDestroy},
		{"Dies", 0, testDies},
		{"CleanupLive", 0, testCleanupLive},
		{"ImageScratch", ImageRoots, testImageScratch},
		{"ImageDebian", ImageRoots, testImageDebian},
		{"ImageHostile", ImageRoots, testImageHostile},
		{"ImageFilesAndEgress", ImageRoots | Egress, testImageFilesAndEgress},
		{"ImageRootUser", ImageRoots, testImageRootUser},
		{"ImageIsolation", ImageRoots, testImageIsolation},
		{"ImageDiskQuota", ImageRoots, testImageDiskQuota},
		{"ImageBadRoot", ImageRoots, testImageBadRoot},
	}
}

// base is the spec the contract's subtests start from: the host's root,
// or the test Debian image for a driver that lacks HostRoot.
func (d Driver) base(tb testing.TB, id string) sandbox.Spec {
	s := sandbox.Spec{ID: id}
	if d.Lacks&HostRoot != 0 {
		s.Root = DebianRoot(tb)
	}
	return s
}

// gone fails the test if anything of sb is left on its host.
func gone(t *testing.T, h Host, sb sandbox.Sandbox) {
	t.Helper()
	if l := h.Leftovers(t, sb); len(l) > 0 {
		t.Errorf("left of sandbox %s: %v", sb.ID(), l)
	}
}

// needHost returns rt's Host, or skips the rest of the test, saying so.
func needHost(t *testing.T, rt Runtime) Host {
	t.Helper()
	if rt.Host == nil {
		t.Skip("no Host hook: the driver's sandboxes cannot be looked at from their host")
	}
	return rt.Host
}

// Start starts a sandbox of spec (its ID made unique) and destroys it when
// the test ends.
func Start(tb testing.TB, rt sandbox.Runtime, spec sandbox.Spec) sandbox.Sandbox {
	tb.Helper()
	spec.ID = strings.ToLower(spec.ID + "-" + rand.Text()[:6])
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sb, err := rt.Start(ctx, spec)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = sb.Destroy(context.Background()) })
	return sb
}

// Shell runs code in sb's shell and returns its output; it fails the test
// if the agent does not answer.
func Shell(tb testing.TB, sb sandbox.Sandbox, code string) *agent.Output {
	tb.Helper()
	return Exec(tb, sb, agent.ExecRequest{Language: agent.Shell, Code: code})
}

// Exec runs req in sb.
func Exec(tb testing.TB, sb sandbox.Sandbox, req agent.ExecRequest) *agent.Output {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := sb.Agent().Exec(ctx, req, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// want fails the test unless out succeeded with stdout want.
func want(tb testing.TB, what string, out *agent.Output, stdout string) {
	tb.Helper()
	if out.ExitCode != 0 || strings.TrimSpace(out.Stdout) != stdout {
		tb.Errorf("%s: got exit %d, stdout %q, stderr %q; want %q", what, out.ExitCode, out.Stdout, out.Stderr, stdout)
	}
}

// fails fails the test unless every one of codes fails in sb.
func fails(tb testing.TB, sb sandbox.Sandbox, codes ...string) {
	tb.Helper()
	for _, code := range codes {
		if out := Shell(tb, sb, code); out.Status == agent.StatusSuccess {
			tb.Errorf("%q succeeded: %+v", code, out)
		}
	}
}
