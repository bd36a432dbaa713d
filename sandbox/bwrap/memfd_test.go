package bwrap

import (
	"io"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMemfdCloseOnExec: the files bubblewrap reads its arguments and
// seccomp program from are close-on-exec in the server, so that no other
// process it starts meanwhile inherits them (cmd.ExtraFiles passes them on
// to the one bubblewrap they are for).
func TestMemfdCloseOnExec(t *testing.T) {
	f, err := memfd("test", []byte("--args\x00"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0)
	if err != nil {
		t.Fatal(err)
	}
	if flags&unix.FD_CLOEXEC == 0 {
		t.Fatal("the memfd is not close-on-exec")
	}
	if b, err := io.ReadAll(f); err != nil || string(b) != "--args\x00" {
		t.Fatalf("content: %q, %v", b, err)
	}
}
