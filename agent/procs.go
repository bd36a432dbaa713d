package agent

import (
	"bytes"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// procs owns the agent's child processes. The agent is a child subreaper (or
// PID 1 under gVisor), so orphaned grandchildren are re-parented to it: the
// reaper collects those, while exec.Cmd keeps reaping the children it
// started (they are "tracked" and the reaper leaves them alone).
type procs struct {
	mu      sync.Mutex
	tracked map[int]bool
}

func newProcs() *procs {
	return &procs{tracked: make(map[int]bool)}
}

// start starts cmd, tracks it and makes it the first candidate of the OOM
// killer, so that a memory bomb takes the user's process and not the agent.
func (p *procs) start(cmd *exec.Cmd) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	p.tracked[cmd.Process.Pid] = true
	_ = os.WriteFile("/proc/"+strconv.Itoa(cmd.Process.Pid)+"/oom_score_adj", []byte("1000"), 0)
	return nil
}

// wait waits for cmd and stops tracking it.
func (p *procs) wait(cmd *exec.Cmd) error {
	err := cmd.Wait()
	p.mu.Lock()
	delete(p.tracked, cmd.Process.Pid)
	p.mu.Unlock()
	return err
}

// reap collects exited orphans until stop is closed.
func (p *procs) reap(stop <-chan struct{}) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil && os.Getpid() != 1 {
		return
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGCHLD)
	defer signal.Stop(sig)
	for {
		select {
		case <-stop:
			return
		case <-sig:
		}
		p.mu.Lock()
		for _, pid := range childrenOf(os.Getpid()) {
			if !p.tracked[pid] {
				var ws unix.WaitStatus
				_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
			}
		}
		p.mu.Unlock()
	}
}

// killTree kills roots and every descendant of them with SIGKILL, process
// groups included, so nothing that a timed-out execution started survives.
func killTree(roots ...int) {
	parents := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid := parentOf(pid); ppid > 0 {
			parents[ppid] = append(parents[ppid], pid)
		}
	}
	seen := map[int]bool{}
	queue := append([]int(nil), roots...)
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if seen[pid] || pid <= 1 || pid == os.Getpid() {
			continue
		}
		seen[pid] = true
		queue = append(queue, parents[pid]...)
	}
	for pid := range seen {
		_ = unix.Kill(-pid, unix.SIGKILL) // its process group, if it leads one
		_ = unix.Kill(pid, unix.SIGKILL)
	}
}

func parentOf(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name is in parentheses and may hold spaces: parse after it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

func childrenOf(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if c, err := strconv.Atoi(e.Name()); err == nil && parentOf(c) == pid {
			out = append(out, c)
		}
	}
	return out
}

// exitInfo turns a Wait error into an exit code and signal name.
func exitInfo(state *os.ProcessState) (code int, sig string) {
	if state == nil {
		return -1, ""
	}
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), ws.Signal().String()
	}
	return state.ExitCode(), ""
}
