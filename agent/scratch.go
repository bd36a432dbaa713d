package agent

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// reserveBytes is the space the agent holds back on the session's disk for
// its own scratch files, so that a session whose code filled the disk (in
// bytes or in inodes) can still run the command that deletes files.
const reserveBytes = 64 << 10

func (x *executor) reservePath() string { return filepath.Join(x.private, "reserve") }

// reserve takes the held-back space if it is not held yet; best effort (a
// full disk leaves it for the next execution).
func (x *executor) reserve() {
	path := x.reservePath()
	if _, err := os.Stat(path); err == nil {
		return
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	if unix.Fallocate(int(f.Fd()), 0, 0, reserveBytes) == nil {
		return
	}
	// A file system without fallocate: written zeros hold the space too.
	if _, err := f.Write(make([]byte, reserveBytes)); err != nil || f.Sync() != nil {
		os.Remove(path)
	}
}

// writeScratch writes one of the agent's own files; when the disk is full it
// gives up the reserve and tries once more.
func (x *executor) writeScratch(path string, data []byte) error {
	err := os.WriteFile(path, data, 0o600)
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		os.Remove(x.reservePath())
		err = os.WriteFile(path, data, 0o600)
	}
	return err
}
