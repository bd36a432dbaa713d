package image

import (
	"context"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// fileLock is an exclusive flock(2) on a file, held by this process until
// unlock (or until the process dies: the kernel drops it then).
type fileLock struct{ f *os.File }

func openLockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("image: lock: %w", err)
	}
	return f, nil
}

// tryLock takes the lock if it is free.
func tryLock(path string) (*fileLock, bool, error) {
	f, err := openLockFile(path)
	if err != nil {
		return nil, false, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if err == unix.EWOULDBLOCK {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("image: lock %s: %w", path, err)
	}
	return &fileLock{f}, true, nil
}

// lock waits for the lock (polling, so that ctx can end the wait).
func lock(ctx context.Context, path string) (*fileLock, error) {
	for {
		l, ok, err := tryLock(path)
		if err != nil || ok {
			return l, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (l *fileLock) unlock() {
	if l != nil {
		l.f.Close() // closing the last descriptor releases the flock
	}
}
