package seccomp

import (
	"encoding/binary"
	"runtime"
	"testing"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// run evaluates the filter on one call. x/net/bpf's VM loads words in
// network byte order, so seccomp_data is written big-endian here (the
// kernel uses the host's order; the offsets are the same).
func run(t *testing.T, vm *bpf.VM, auditArch uint32, nr int, arg0 uint64) uint32 {
	t.Helper()
	data := make([]byte, 64) // struct seccomp_data
	binary.BigEndian.PutUint32(data[0:], uint32(nr))
	binary.BigEndian.PutUint32(data[4:], auditArch)
	lo, hi := 16, 20 // arg0's low and high words on a little-endian host
	binary.BigEndian.PutUint32(data[lo:], uint32(arg0))
	binary.BigEndian.PutUint32(data[hi:], uint32(arg0>>32))
	ret, err := vm.Run(data)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(ret)
}

func TestFilterABIs(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the i386 and x32 ABIs are x86-64's")
	}
	insns, err := Instructions()
	if err != nil {
		t.Fatal(err)
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatal(err)
	}
	x86 := uint32(arch.X86_64.ID)
	i386 := uint32(arch.I386.ID)
	nr := func(a *arch.Info, name string) int {
		n, ok := a.SyscallNames[name]
		if !ok {
			t.Fatalf("%s has no %s", a.Name, name)
		}
		return n
	}
	allow := uint32(seccomp.ActionAllow)
	eperm := uint32(seccomp.ActionErrno) | uint32(unix.EPERM)
	enosys := uint32(seccomp.ActionErrno) | uint32(unix.ENOSYS)
	for _, c := range []struct {
		name string
		arch uint32
		nr   int
		arg0 uint64
		want uint32
	}{
		{"x86-64 read", x86, nr(arch.X86_64, "read"), 0, allow},
		{"x86-64 ptrace", x86, nr(arch.X86_64, "ptrace"), 0, eperm},
		{"x86-64 io_uring_setup", x86, nr(arch.X86_64, "io_uring_setup"), 0, eperm},
		{"x86-64 clone", x86, nr(arch.X86_64, "clone"), 0x11, allow},
		{"x86-64 clone thread", x86, nr(arch.X86_64, "clone"), 0x50f00, allow},
		{"x86-64 clone newuser", x86, nr(arch.X86_64, "clone"), 0x10000000, eperm},
		{"x86-64 clone3", x86, nr(arch.X86_64, "clone3"), 0, enosys},
		{"i386 ptrace", i386, nr(arch.I386, "ptrace"), 0, enosys},
		{"i386 keyctl", i386, nr(arch.I386, "keyctl"), 0, enosys},
		{"i386 userfaultfd", i386, nr(arch.I386, "userfaultfd"), 0, enosys},
		{"i386 io_uring_setup", i386, nr(arch.I386, "io_uring_setup"), 0, enosys},
		{"i386 getpid", i386, nr(arch.I386, "getpid"), 0, enosys},
		{"x32 ptrace", x86, nr(arch.X32, "ptrace") | 0x40000000, 0, enosys},
		{"x32 read", x86, nr(arch.X32, "read") | 0x40000000, 0, enosys},
		{"x32 keyctl", x86, nr(arch.X32, "keyctl") | 0x40000000, 0, enosys},
		{"unknown arch", 0x12345678, 0, 0, enosys},
		{"x86-64 openat", x86, nr(arch.X86_64, "openat"), 0, allow},
		{"x86-64 mmap", x86, nr(arch.X86_64, "mmap"), 0, allow},
		{"x86-64 socket", x86, nr(arch.X86_64, "socket"), 0, allow},
		{"x86-64 sethostname", x86, nr(arch.X86_64, "sethostname"), 0, eperm},
		{"x86-64 keyctl", x86, nr(arch.X86_64, "keyctl"), 0, eperm},
		{"x86-64 call newer than the table", x86, 1000, 0, enosys},
	} {
		if got := run(t, vm, c.arch, c.nr, c.arg0); got != c.want {
			t.Errorf("%s: got %#x, want %#x", c.name, got, c.want)
		}
	}
}
