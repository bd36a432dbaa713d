package agent

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// ExecNprocFlag is the agent's flag ("berth agent --exec-nproc N -- ARGV")
// that makes it, instead of serving, replace itself with ARGV under
// RLIMIT_NPROC N: how the agent applies its process limit to a program in
// an image that has no shell (scratch, distroless). See ExecLimited.
const ExecNprocFlag = "exec-nproc"

// ExecLimited replaces the process with argv (looked up in $PATH) under
// RLIMIT_NPROC n. It returns only on error.
func ExecLimited(n int, argv []string) error {
	if len(argv) == 0 {
		return errors.New("no command")
	}
	if err := unix.Setrlimit(unix.RLIMIT_NPROC, &unix.Rlimit{Cur: uint64(n), Max: uint64(n)}); err != nil {
		return err
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return err
	}
	return syscall.Exec(path, argv, os.Environ())
}

// limitedCommand runs argv under the executor's process limit, applied
// before the program runs: by bash's ulimit where the sandbox has bash,
// else by the agent's own binary (ExecLimited), so that images without a
// shell run too.
func (x *executor) limitedCommand(argv []string) *exec.Cmd {
	if x.maxProcs <= 0 {
		return exec.Command(argv[0], argv[1:]...)
	}
	if _, err := os.Stat("/bin/bash"); err == nil {
		return exec.Command("/bin/bash", append([]string{"-c", `ulimit -u "$BERTH_MAX_PROCS" && exec "$@"`, "sh"}, argv...)...)
	}
	self, err := os.Executable()
	if err != nil {
		self = "/proc/self/exe"
	}
	return exec.Command(self, append([]string{"agent", "--" + ExecNprocFlag, strconv.Itoa(x.maxProcs), "--"}, argv...)...)
}
