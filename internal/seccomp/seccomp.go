// Package seccomp builds the seccomp filter that Berth installs in every
// bubblewrap sandbox. It denies, in the spirit of Docker's default profile,
// the system calls that untrusted code has no business making (kernel
// modules, mounts, namespaces, tracing, keyrings, clock changes, reboots…),
// allows the rest of the architecture's table, and refuses what it does
// not know.
// Denied calls fail with EPERM rather than killing the process, so tools
// that probe for features degrade gracefully.
//
// The list only means something for the host's own system call ABI: on
// x86-64 a process can also make i386 calls (int 0x80) and x32 calls
// (numbers with bit 30 set), whose numbers are different. The filter
// therefore refuses every call made through any other ABI than the native
// one (ENOSYS): the i386 ABI, the x32 ABI, and on arm64 the 32-bit one.
package seccomp

import (
	"encoding/binary"
	"fmt"
	"sort"
	"sync"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Denied lists the system calls the filter refuses with EPERM.
var Denied = []string{
	"acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "delete_module",
	"finit_module", "fsconfig", "fsmount", "fsopen", "fspick", "get_mempolicy",
	"init_module", "ioperm", "iopl", "kcmp", "kexec_file_load", "kexec_load",
	"keyctl", "lookup_dcookie", "mbind", "mount", "mount_setattr", "move_mount",
	"move_pages", "name_to_handle_at", "open_by_handle_at", "open_tree",
	"perf_event_open", "pivot_root", "process_vm_readv", "process_vm_writev",
	"ptrace", "quotactl", "reboot", "request_key", "set_mempolicy", "setns",
	"settimeofday", "swapoff", "swapon", "sysfs", "umount2", "unshare", "uselib",
	"userfaultfd", "ustat", "io_uring_setup", "io_uring_enter", "io_uring_register",
	"syslog", "vhangup", "pidfd_getfd",
}

// cloneNamespaceFlags are clone(2) flags that create namespaces.
const cloneNamespaceFlags = 0x00020000 | // CLONE_NEWNS
	0x02000000 | // CLONE_NEWCGROUP
	0x04000000 | // CLONE_NEWUTS
	0x08000000 | // CLONE_NEWIPC
	0x10000000 | // CLONE_NEWUSER
	0x20000000 | // CLONE_NEWPID
	0x40000000 // CLONE_NEWNET

// Unneeded lists further calls that the bubblewrap filter refuses (EPERM):
// obsolete or unimplemented ones, and ones that only matter to a
// privileged process, which nothing in a sandbox is.
var Unneeded = []string{
	"afs_syscall", "chroot", "create_module", "fanotify_init", "get_kernel_syms",
	"getpmsg", "nfsservctl", "process_madvise", "putpmsg", "query_module",
	"quotactl_fd", "security", "set_mempolicy_home_node", "setdomainname",
	"sethostname", "_sysctl", "tuxcall", "vserver",
}

// Policy is the filter as a go-seccomp-bpf policy, for the host's
// architecture. It is an allow list: every call of the architecture's
// table but the denied ones. A call the table does not know (one added to
// the kernel since) is refused with ENOSYS, as are calls through other
// ABIs (see Instructions).
func Policy() (*seccomp.Policy, error) {
	native, err := arch.GetInfo("")
	if err != nil {
		return nil, err
	}
	deny := map[string]bool{"clone3": true}
	var denied, allowed []string
	for _, name := range append(append([]string{}, Denied...), Unneeded...) {
		if _, ok := native.SyscallNames[name]; ok && !deny[name] {
			denied = append(denied, name)
		}
		deny[name] = true
	}
	for name := range native.SyscallNames {
		if !deny[name] {
			allowed = append(allowed, name)
		}
	}
	sort.Strings(allowed)
	return &seccomp.Policy{
		// EPERM: go-seccomp-bpf takes no errno for the default action;
		// Instructions makes it ENOSYS.
		DefaultAction: seccomp.ActionErrno,
		Syscalls: []seccomp.SyscallGroup{
			{Action: seccomp.ActionErrno, Names: denied},
			// clone3 passes its flags in memory, out of a filter's reach:
			// ENOSYS makes libc fall back to clone, which is checked below.
			// (Instructions refuses clone with namespace flags.)
			{Action: seccomp.ActionErrno | seccomp.Action(unix.ENOSYS), Names: []string{"clone3"}},
			{Action: seccomp.ActionAllow, Names: allowed},
		},
	}, nil
}

var (
	once    sync.Once
	program []byte
	progErr error
)

// errnoENOSYS is the answer to a call made through a foreign ABI.
const errnoENOSYS = uint32(seccomp.ActionErrno) | uint32(unix.ENOSYS)

// Instructions returns the filter as BPF instructions: a check that the
// call uses the native ABI, then the policy.
//
// go-seccomp-bpf's own program checks the architecture too, but sends a
// foreign one to the policy's default action, which for a deny list is
// "allow": every call of the i386 ABI would pass. (It does refuse x32
// numbers, with ENOSYS, which this keeps.)
func Instructions() ([]bpf.Instruction, error) {
	native, err := arch.GetInfo("")
	if err != nil {
		return nil, err
	}
	p, err := Policy()
	if err != nil {
		return nil, err
	}
	insns, err := p.Assemble()
	if err != nil {
		return nil, err
	}
	// The program ends with the default action: a call the filter does
	// not know gets ENOSYS, as on a kernel that lacks it, so that programs
	// fall back to older calls.
	last := len(insns) - 1
	if ret, ok := insns[last].(bpf.RetConstant); !ok || ret.Val != uint32(seccomp.ActionErrno)|uint32(unix.EPERM) {
		return nil, fmt.Errorf("seccomp: unexpected end of the assembled filter: %v", insns[last])
	}
	insns[last] = bpf.RetConstant{Val: errnoENOSYS}
	// clone with namespace flags is refused here rather than in the
	// policy: go-seccomp-bpf leaves an argument in the accumulator after a
	// failed argument check, so that a group after one would compare the
	// argument with its call numbers. The flags are in arg0's low word.
	arg0Low := uint32(16) // offsetof(struct seccomp_data, args[0])
	if binary.NativeEndian.Uint16([]byte{0, 1}) == 1 {
		arg0Low += 4 // big-endian
	}
	clone, ok := native.SyscallNames["clone"]
	if !ok {
		return nil, fmt.Errorf("seccomp: no clone on %s", native.Name)
	}
	return append([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 4, Size: 4}, // seccomp_data.arch
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(native.ID), SkipTrue: 1},
		bpf.RetConstant{Val: errnoENOSYS},
		bpf.LoadAbsolute{Off: 0, Size: 4}, // seccomp_data.nr
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(clone), SkipTrue: 3},
		bpf.LoadAbsolute{Off: arg0Low, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: cloneNamespaceFlags, SkipFalse: 1},
		bpf.RetConstant{Val: uint32(seccomp.ActionErrno) | uint32(unix.EPERM)},
	}, insns...), nil
}

// Program returns the filter as raw struct sock_filter instructions, the
// format bubblewrap's --seccomp FD reads. It is assembled once.
func Program() ([]byte, error) {
	once.Do(func() {
		insns, err := Instructions()
		if err != nil {
			progErr = err
			return
		}
		raw, err := bpf.Assemble(insns)
		if err != nil {
			progErr = err
			return
		}
		program = make([]byte, 0, 8*len(raw))
		for _, in := range raw {
			program = binary.LittleEndian.AppendUint16(program, in.Op)
			program = append(program, in.Jt, in.Jf)
			program = binary.LittleEndian.AppendUint32(program, in.K)
		}
	})
	return program, progErr
}
