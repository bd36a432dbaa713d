// Package cgroup creates one control group per sandbox and enforces its
// memory, pids and CPU limits, on cgroup v2 (unified) hosts and on v1 hosts
// with one hierarchy per controller. It detects which it has from
// /proc/self/mounts: v2 is used when its mount offers the memory and pids
// controllers, v1 otherwise.
package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Limits for one group. Zero means unlimited.
type Limits struct {
	MemoryBytes int64
	Pids        int64
	CPU         float64 // cores
}

// Manager owns a subtree of groups under a parent name such as
// "berth/3fa2c1".
type Manager struct {
	v2     bool
	v2root string
	parent string
	// dirs are the parent directories, one per v1 hierarchy (memory, pids,
	// cpu) or the single v2 one.
	dirs map[string]string
}

// ErrUnavailable means the host offers no usable memory and pids controllers.
var ErrUnavailable = errors.New("cgroup: no memory and pids controllers are available")

// New finds the cgroup mounts and creates the parent group.
func New(parent string) (*Manager, error) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	v1 := map[string]string{}
	var v2root string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 {
			continue
		}
		switch fields[2] {
		case "cgroup2":
			if v2root == "" {
				v2root = fields[1]
			}
		case "cgroup":
			for _, opt := range strings.Split(fields[3], ",") {
				if opt == "memory" || opt == "pids" || opt == "cpu" || opt == "cpuacct" {
					v1[opt] = fields[1]
				}
			}
		}
	}
	m := &Manager{parent: parent, dirs: map[string]string{}, v2root: v2root}
	if v2root != "" {
		ctrl, _ := os.ReadFile(filepath.Join(v2root, "cgroup.controllers"))
		have := strings.Fields(string(ctrl))
		if slices.Contains(have, "memory") && slices.Contains(have, "pids") {
			m.v2 = true
			m.dirs["unified"] = filepath.Join(v2root, parent)
			return m, m.initV2(v2root)
		}
	}
	if v1["memory"] == "" || v1["pids"] == "" {
		return nil, ErrUnavailable
	}
	if v1["cpuacct"] == v1["cpu"] {
		delete(v1, "cpuacct") // mounted together: the cpu group has cpuacct.usage
	}
	for ctrl, mnt := range v1 {
		m.dirs[ctrl] = filepath.Join(mnt, parent)
	}
	return m, m.ensureParent()
}

// ensureParent (re)creates the parent groups, which Remove deletes.
func (m *Manager) ensureParent() error {
	if m.v2 {
		return m.initV2(m.v2root)
	}
	for _, dir := range m.dirs {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("cgroup: %w", err)
		}
	}
	// Make the memory controller account (and limit) hierarchically.
	_ = os.WriteFile(filepath.Join(m.dirs["memory"], "memory.use_hierarchy"), []byte("1"), 0)
	return nil
}

func (m *Manager) initV2(root string) error {
	// Enable the controllers down to the parent, so that groups below it
	// get memory.max, pids.max and cpu.max.
	rel, _ := filepath.Rel(root, m.dirs["unified"])
	dir := root
	for _, part := range append([]string{""}, strings.Split(rel, "/")...) {
		dir = filepath.Join(dir, part)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("cgroup: %w", err)
		}
		for _, c := range []string{"+memory", "+pids", "+cpu"} {
			_ = os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(c), 0)
		}
	}
	return nil
}

// V2 reports whether the unified hierarchy is in use.
func (m *Manager) V2() bool { return m.v2 }

// Parent is the parent group's path relative to the cgroup root(s).
func (m *Manager) Parent() string { return m.parent }

// Group is one sandbox's control group.
type Group struct {
	name string
	v2   bool
	dirs map[string]string
}

// Create makes a group with the given limits.
func (m *Manager) Create(name string, l Limits) (*Group, error) {
	if !m.v2 {
		// Cheap on v1; Remove may have taken the parents.
		if err := m.ensureParent(); err != nil {
			return nil, err
		}
	} else if _, err := os.Stat(m.dirs["unified"]); os.IsNotExist(err) {
		if err := m.ensureParent(); err != nil {
			return nil, err
		}
	}
	g := &Group{name: name, v2: m.v2, dirs: map[string]string{}}
	for ctrl, parent := range m.dirs {
		dir := filepath.Join(parent, name)
		if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
			g.Destroy()
			return nil, fmt.Errorf("cgroup: %w", err)
		}
		g.dirs[ctrl] = dir
	}
	if err := g.apply(l); err != nil {
		g.Destroy()
		return nil, err
	}
	return g, nil
}

func (g *Group) apply(l Limits) error {
	type setting struct{ ctrl, file, value string }
	var s []setting
	if g.v2 {
		if l.MemoryBytes > 0 {
			s = append(s, setting{"unified", "memory.max", strconv.FormatInt(l.MemoryBytes, 10)},
				setting{"unified", "memory.swap.max", "0"})
		}
		if l.Pids > 0 {
			s = append(s, setting{"unified", "pids.max", strconv.FormatInt(l.Pids, 10)})
		}
		if l.CPU > 0 {
			s = append(s, setting{"unified", "cpu.max", fmt.Sprintf("%d 100000", int64(l.CPU*100000))})
		}
	} else {
		if l.MemoryBytes > 0 {
			v := strconv.FormatInt(l.MemoryBytes, 10)
			s = append(s, setting{"memory", "memory.limit_in_bytes", v},
				setting{"memory", "memory.memsw.limit_in_bytes", v}, // absent without swap accounting
				setting{"memory", "memory.swappiness", "0"})
		}
		if l.Pids > 0 {
			s = append(s, setting{"pids", "pids.max", strconv.FormatInt(l.Pids, 10)})
		}
		if l.CPU > 0 && g.dirs["cpu"] != "" {
			s = append(s, setting{"cpu", "cpu.cfs_period_us", "100000"},
				setting{"cpu", "cpu.cfs_quota_us", strconv.FormatInt(int64(l.CPU*100000), 10)})
		}
	}
	for _, x := range s {
		err := os.WriteFile(filepath.Join(g.dirs[x.ctrl], x.file), []byte(x.value), 0)
		if err != nil && !(os.IsNotExist(err) && (x.file == "memory.memsw.limit_in_bytes" || x.file == "memory.swap.max" || x.file == "memory.swappiness")) {
			return fmt.Errorf("cgroup: set %s=%s: %w", x.file, x.value, err)
		}
	}
	return nil
}

// Paths returns the group's directory per hierarchy ("unified" on v2).
func (g *Group) Paths() map[string]string { return g.dirs }

// Add moves a process into the group.
func (g *Group) Add(pid int) error {
	for _, dir := range g.dirs {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			return fmt.Errorf("cgroup: add %d: %w", pid, err)
		}
	}
	return nil
}

// OOMKills returns how many processes the kernel's OOM killer has killed in
// the group.
func (g *Group) OOMKills() uint64 {
	file := "memory.oom_control"
	dir := g.dirs["memory"]
	if g.v2 {
		file, dir = "memory.events", g.dirs["unified"]
	}
	b, _ := os.ReadFile(filepath.Join(dir, file))
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "oom_kill" {
			n, _ := strconv.ParseUint(f[1], 10, 64)
			return n
		}
	}
	return 0
}

// MemoryBytes returns the group's current memory use.
func (g *Group) MemoryBytes() uint64 {
	file, dir := "memory.usage_in_bytes", g.dirs["memory"]
	if g.v2 {
		file, dir = "memory.current", g.dirs["unified"]
	}
	b, _ := os.ReadFile(filepath.Join(dir, file))
	n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return n
}

// CPUUsage returns the CPU time the group's processes have used (v1's
// cpuacct.usage, v2's usage_usec in cpu.stat); 0 if unknown.
func (g *Group) CPUUsage() time.Duration {
	if g.v2 {
		b, _ := os.ReadFile(filepath.Join(g.dirs["unified"], "cpu.stat"))
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "usage_usec" {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				return time.Duration(n) * time.Microsecond
			}
		}
		return 0
	}
	dir := g.dirs["cpuacct"]
	if dir == "" {
		dir = g.dirs["cpu"]
	}
	if dir == "" {
		return 0
	}
	b, _ := os.ReadFile(filepath.Join(dir, "cpuacct.usage"))
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return time.Duration(n)
}

// Pids returns the number of tasks in the group and its limit (0 if none).
func (g *Group) Pids() (current, limit int64) {
	dir := g.dirs["pids"]
	if g.v2 {
		dir = g.dirs["unified"]
	}
	read := func(f string) int64 {
		b, _ := os.ReadFile(filepath.Join(dir, f))
		n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return n
	}
	return read("pids.current"), read("pids.max")
}

// Kill kills every process in the group and waits (briefly) until it is
// empty.
func (g *Group) Kill() {
	if g.v2 {
		if os.WriteFile(filepath.Join(g.dirs["unified"], "cgroup.kill"), []byte("1"), 0) == nil {
			g.waitEmpty()
			return
		}
	}
	for i := 0; i < 50; i++ {
		pids := g.pids()
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(time.Duration(i+1) * time.Millisecond)
	}
}

func (g *Group) waitEmpty() {
	for i := 0; i < 50 && len(g.pids()) > 0; i++ {
		time.Sleep(time.Duration(i+1) * time.Millisecond)
	}
}

func (g *Group) pids() []int {
	seen := map[int]bool{}
	var out []int
	for _, dir := range g.dirs {
		b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
				seen[pid] = true
				out = append(out, pid)
			}
		}
	}
	return out
}

// Destroy kills what is left in the group and removes it.
func (g *Group) Destroy() {
	g.Kill()
	for _, dir := range g.dirs {
		removeTree(dir)
	}
}

// removeTree removes a cgroup directory and any groups below it (cgroup
// directories are removed with rmdir, deepest first).
func removeTree(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			removeTree(filepath.Join(dir, e.Name()))
		}
	}
	for i := 0; i < 20; i++ {
		if err := syscall.Rmdir(dir); err == nil || errors.Is(err, syscall.ENOENT) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Cleanup kills every process in every group under the parent and removes
// the groups: what a crashed run left behind.
func (m *Manager) Cleanup() {
	names := map[string]bool{}
	for _, parent := range m.dirs {
		entries, _ := os.ReadDir(parent)
		for _, e := range entries {
			if e.IsDir() {
				names[e.Name()] = true
			}
		}
	}
	for name := range names {
		g := &Group{name: name, v2: m.v2, dirs: map[string]string{}}
		for ctrl, parent := range m.dirs {
			g.dirs[ctrl] = filepath.Join(parent, name)
		}
		g.Destroy()
	}
}

// Remove removes the (empty) parent groups; Cleanup first. Create makes
// them again when needed.
func (m *Manager) Remove() {
	for _, parent := range m.dirs {
		removeTree(parent)
	}
}
