package agent

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Harden prepares the agent's process before it serves anything:
//
//   - every file descriptor it inherited beyond stdin, stdout and stderr
//     (bubblewrap leaves some of its own: the seccomp program, a pipe, its
//     argument file) is marked close-on-exec, so that the code the agent
//     runs sees only 0, 1 and 2;
//   - the process is made non-dumpable, so that code running as the same
//     uid cannot read or write the agent's memory or descriptors through
//     /proc (/proc/PID/mem, /proc/PID/fd) and take it over.
func Harden() error {
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		if err := cloexecAll(); err != nil {
			return err
		}
	}
	return unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
}

// cloexecAll marks every open descriptor above 2 close-on-exec, for
// kernels without close_range.
func cloexecAll() error {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return err
	}
	for _, n := range names {
		if fd, err := strconv.Atoi(n); err == nil && fd > 2 {
			_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
		}
	}
	return nil
}
