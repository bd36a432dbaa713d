// Package seccomp builds the seccomp filter that Berth installs in every
// bubblewrap sandbox: a deny list, in the spirit of Docker's default profile,
// of system calls that untrusted code has no business making (kernel
// modules, mounts, namespaces, tracing, keyrings, clock changes, reboots…).
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

// Policy is the filter as a go-seccomp-bpf policy.
func Policy() *seccomp.Policy {
	return &seccomp.Policy{
		DefaultAction: seccomp.ActionAllow,
		Syscalls: []seccomp.SyscallGroup{
			{Action: seccomp.ActionErrno, Names: Denied},
			// clone3 passes its flags in memory, out of a filter's reach:
			// ENOSYS makes libc fall back to clone, which is checked below.
			{Action: seccomp.ActionErrno | seccomp.Action(unix.ENOSYS), Names: []string{"clone3"}},
			{
				Action: seccomp.ActionErrno,
				NamesWithCondtions: []seccomp.NameWithConditions{{
					Name: "clone",
					Conditions: seccomp.ArgumentConditions{
						{Argument: 0, Operation: seccomp.BitsSet, Value: cloneNamespaceFlags},
					},
				}},
			},
		},
	}
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
	insns, err := Policy().Assemble()
	if err != nil {
		return nil, err
	}
	return append([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 4, Size: 4}, // seccomp_data.arch
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(native.ID), SkipTrue: 1},
		bpf.RetConstant{Val: errnoENOSYS},
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
