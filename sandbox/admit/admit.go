// Package admit admits sandboxes against what the host can give them, so
// that a host is never promised more memory or disk than it has (times a
// configurable overcommit) and the kernel does not have to OOM-kill at
// random or the disk fill up under every session at once.
//
// Every sandbox a server starts (a session's, a warm one, an app replica's
// or spare) reserves its memory limit and its disk size from one Budget
// when it starts, and gives them back when it is destroyed. A start that
// does not fit fails at once with sandbox.ErrNoCapacity, which callers
// report as "host at capacity" (503 with Retry-After). Configurations
// that could never fit (one sandbox larger than the whole budget, or more
// warm sandboxes than it holds) are refused when they are made.
//
// The capacity is the host's memory (MemTotal, or the memory limit of the
// cgroup Berth runs in if that is lower) and the free space of the file
// system that holds the sandboxes' disks, measured at start. Each is
// multiplied by its overcommit ratio: a sandbox's memory limit is a
// ceiling most sandboxes never reach, and its disk image is sparse.
package admit

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/sandbox"
)

// Default overcommit ratios.
const (
	DefaultMemoryOvercommit = 1.5
	DefaultDiskOvercommit   = 2.0
)

// Options configure a Budget. Zero fields take defaults.
type Options struct {
	// MemoryCapacity is the host's memory in bytes (default: detected).
	MemoryCapacity int64
	// MemoryOvercommit multiplies it (default 1.5).
	MemoryOvercommit float64
	// DiskCapacity is the disk space for sandboxes in bytes (default: the
	// free space of DiskPath's file system).
	DiskCapacity int64
	// DiskOvercommit multiplies it (default 2).
	DiskOvercommit float64
	// DiskPath is where the sandboxes' disks live (default /var/lib/berth).
	DiskPath string
}

// Budget is what the host admits, and what its sandboxes hold of it.
type Budget struct {
	mem, disk resource

	mu      sync.Mutex
	memUsed int64
	dskUsed int64
	freed   chan struct{} // closed (and replaced) when something is released
}

// resource is one kind of capacity.
type resource struct {
	name, flag string
	capacity   int64   // what the host has
	ratio      float64 // overcommit
}

// limit is what the budget admits of the resource.
func (r resource) limit() int64 {
	return int64(math.Min(float64(r.capacity)*r.ratio, math.MaxInt64/2))
}

func (r resource) describe() string {
	return fmt.Sprintf("%s (%s × %s %g)", formatBytes(r.limit()), formatBytes(r.capacity), r.flag, r.ratio)
}

// New measures the host (for the capacities not given) and returns an
// empty budget.
func New(o Options) (*Budget, error) {
	if o.MemoryOvercommit == 0 {
		o.MemoryOvercommit = DefaultMemoryOvercommit
	}
	if o.DiskOvercommit == 0 {
		o.DiskOvercommit = DefaultDiskOvercommit
	}
	if o.MemoryOvercommit < 0.1 || o.MemoryOvercommit > 100 || o.DiskOvercommit < 0.1 || o.DiskOvercommit > 100 {
		return nil, fmt.Errorf("overcommit ratios must be between 0.1 and 100 (memory %g, disk %g)", o.MemoryOvercommit, o.DiskOvercommit)
	}
	if o.DiskPath == "" {
		o.DiskPath = "/var/lib/berth"
	}
	var err error
	if o.MemoryCapacity == 0 {
		if o.MemoryCapacity, err = HostMemory(); err != nil {
			return nil, fmt.Errorf("measure the host's memory: %w", err)
		}
	}
	if o.DiskCapacity == 0 {
		if o.DiskCapacity, err = FreeDisk(o.DiskPath); err != nil {
			return nil, fmt.Errorf("measure the free disk space at %s: %w", o.DiskPath, err)
		}
	}
	if o.MemoryCapacity < 0 || o.DiskCapacity < 0 {
		return nil, errors.New("capacities must be positive")
	}
	return &Budget{
		mem:   resource{name: "memory", flag: "--memory-overcommit", capacity: o.MemoryCapacity, ratio: o.MemoryOvercommit},
		disk:  resource{name: "disk", flag: "--disk-overcommit", capacity: o.DiskCapacity, ratio: o.DiskOvercommit},
		freed: make(chan struct{}),
	}, nil
}

// Error is a sandbox the budget cannot take now (it wraps
// sandbox.ErrNoCapacity) or ever (Never).
type Error struct {
	Resource string
	Need     int64 // what the sandbox (or sandboxes) asked for
	Used     int64 // what the host's sandboxes hold
	Limit    string
	// Never is set when the request exceeds the whole budget: waiting
	// will not help, the setting must change.
	Never bool
	Count int // sandboxes asked for at once (Fits)
}

func (e *Error) Error() string {
	if e.Never {
		what := "a sandbox"
		if e.Count > 1 {
			what = fmt.Sprintf("%d sandboxes at once", e.Count)
		}
		return fmt.Sprintf("%s with %s of %s each cannot run on this host: it admits %s of %s in all", what, formatBytes(e.Need/int64(max(e.Count, 1))), e.Resource, e.Limit, e.Resource)
	}
	return fmt.Sprintf("%s: its sandboxes hold %s of the %s of %s it admits, and a new one needs %s; "+
		"try again once sessions end (or end idle ones), or raise the overcommit",
		sandbox.ErrNoCapacity, formatBytes(e.Used), e.Limit, e.Resource, formatBytes(e.Need))
}

// Unwrap makes a temporary refusal sandbox.ErrNoCapacity.
func (e *Error) Unwrap() error {
	if e.Never {
		return nil
	}
	return sandbox.ErrNoCapacity
}

// Reserve takes mem and disk bytes for one sandbox, or fails with an
// *Error that wraps sandbox.ErrNoCapacity. release gives them back; it is
// safe to call more than once.
func (b *Budget) Reserve(mem, disk int64) (release func(), err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.memUsed+mem > b.mem.limit() {
		return nil, &Error{Resource: b.mem.name, Need: mem, Used: b.memUsed, Limit: b.mem.describe()}
	}
	if b.dskUsed+disk > b.disk.limit() {
		return nil, &Error{Resource: b.disk.name, Need: disk, Used: b.dskUsed, Limit: b.disk.describe()}
	}
	b.memUsed += mem
	b.dskUsed += disk
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			b.memUsed -= mem
			b.dskUsed -= disk
			close(b.freed)
			b.freed = make(chan struct{})
			b.mu.Unlock()
		})
	}, nil
}

// Fits reports whether n sandboxes of mem and disk bytes could ever run at
// once: an *Error with Never set if not.
func (b *Budget) Fits(mem, disk int64, n int) error {
	return b.check(mem, disk, max(n, 1))
}

func (b *Budget) check(mem, disk int64, n int) error {
	for _, c := range []struct {
		r    resource
		need int64
	}{{b.mem, mem}, {b.disk, disk}} {
		if c.need > 0 && c.need > c.r.limit()/int64(n) {
			return &Error{Resource: c.r.name, Need: c.need * int64(n), Limit: c.r.describe(), Never: true, Count: n}
		}
	}
	return nil
}

// Freed is closed the next time a sandbox gives its share back.
func (b *Budget) Freed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.freed
}

// Usage is what a budget admits and holds.
type Usage struct {
	MemoryUsed, MemoryLimit, DiskUsed, DiskLimit int64
}

// Usage returns current figures.
func (b *Budget) Usage() Usage {
	b.mu.Lock()
	defer b.mu.Unlock()
	return Usage{MemoryUsed: b.memUsed, MemoryLimit: b.mem.limit(), DiskUsed: b.dskUsed, DiskLimit: b.disk.limit()}
}

// String describes the budget, for the log.
func (b *Budget) String() string {
	return "memory " + b.mem.describe() + ", disk " + b.disk.describe()
}

// HostMemory is MemTotal, or the memory limit of this process's cgroup
// (v2 or v1) if that is lower.
func HostMemory() (int64, error) {
	total, err := memTotal()
	if err != nil {
		return 0, err
	}
	if l := cgroupMemoryLimit(); l > 0 && l < total {
		return l, nil
	}
	return total, nil
}

func memTotal() (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, err
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no MemTotal in /proc/meminfo")
}

// cgroupMemoryLimit is the memory limit of this process's cgroup, 0 if
// none.
func cgroupMemoryLimit() int64 {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		var file string
		switch {
		case parts[0] == "0" && parts[1] == "":
			file = "/sys/fs/cgroup" + parts[2] + "/memory.max"
		case strings.Contains(","+parts[1]+",", ",memory,"):
			file = "/sys/fs/cgroup/memory" + parts[2] + "/memory.limit_in_bytes"
		default:
			continue
		}
		v, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		if n, err := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64); err == nil && n > 0 && n < 1<<60 {
			return n
		}
	}
	return 0
}

// FreeDisk is the space available to unprivileged users on path's file
// system (the nearest existing parent's).
func FreeDisk(path string) (int64, error) {
	for {
		var st unix.Statfs_t
		err := unix.Statfs(path, &st)
		if err == nil {
			return int64(st.Bavail) * st.Bsize, nil
		}
		if !errors.Is(err, unix.ENOENT) || path == "/" {
			return 0, err
		}
		path = parent(path)
	}
}

func parent(p string) string {
	i := strings.LastIndex(strings.TrimRight(p, "/"), "/")
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

// formatBytes renders a size in binary units, rounded to one decimal.
func formatBytes(n int64) string {
	units := []string{"B", "Ki", "Mi", "Gi", "Ti"}
	f := float64(n)
	i := 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	if i == 0 {
		return strconv.FormatInt(n, 10) + "B"
	}
	return strconv.FormatFloat(math.Round(f*10)/10, 'f', -1, 64) + units[i]
}
