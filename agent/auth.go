package agent

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The agent over TCP.
//
// Locally the agent serves a Unix socket that only the host can reach (a
// bind mount, gVisor's --host-uds): reaching the socket is the
// authentication. Where the sandbox is reached over a network (a Pod of
// the kube driver), the agent listens on TCP instead and every request
// must carry the sandbox's token (Authorization: Bearer TOKEN): Berth
// makes one per sandbox and holds it; the agent reads it, as root, from a
// root-only file (Options.Token, from "berth agent --token-file") and then
// drops to the unprivileged user that code runs as (DropPrivileges), so
// that the sandbox's code can read the token from no file (root-only),
// no environment or argv (it is in neither) and no /proc of the agent
// (non-dumpable, see Harden). A token unlocks only its own sandbox's
// agent: code that took over its agent gains nothing it did not have.
//
// The token travels in clear over the cluster's Pod network: it keeps
// other Pods from driving an agent, not an on-path observer out (the
// network the driver runs on must be trusted to deliver to the Pod IP).

// tokenHeaderPrefix prefixes the token in the Authorization header.
const tokenHeaderPrefix = "Bearer "

// requireToken serves h only to requests that carry token.
func requireToken(token string, h http.Handler) http.Handler {
	want := []byte(tokenHeaderPrefix + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			writeJSON(w, http.StatusUnauthorized, ErrorBody{Code: CodeBadRequest, Message: "the agent's token is missing or wrong"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// MinTokenLen is the shortest token the agent accepts.
const MinTokenLen = 32

// ReadToken reads the agent's token from path: one line of at least
// MinTokenLen printable characters.
func ReadToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < MinTokenLen || strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return "", fmt.Errorf("token in %s: want at least %d printable characters", path, MinTokenLen)
	}
	return tok, nil
}

// DropPrivileges makes the agent, started as root, the unprivileged
// uid:gid that the code it runs will be: it first gives dirs to that user
// (the workspace and scratch volumes), then drops every supplementary
// group, the gid and the uid (which clears every capability), and sets
// no_new_privs so that nothing it starts can regain privileges through a
// setuid binary. Call it after reading what only root may read (the
// token) and before Harden.
func DropPrivileges(uid, gid int, dirs ...string) error {
	if uid == 0 || gid == 0 {
		return errors.New("refusing to run code as root")
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := os.Chown(d, uid, gid); err != nil {
			return err
		}
	}
	if err := dropBoundingSet(); err != nil {
		return err
	}
	if err := unix.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := unix.Setresgid(gid, gid, gid); err != nil {
		return fmt.Errorf("setgid: %w", err)
	}
	if err := unix.Setresuid(uid, uid, uid); err != nil {
		return fmt.Errorf("setuid: %w", err)
	}
	// no_new_privs is per thread: set it on all of them (a child may be
	// forked from any). A build with cgo cannot; the kube driver sets it
	// for the whole container too (allowPrivilegeEscalation: false).
	if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); e != 0 {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("no_new_privs: %w", err)
		}
	}
	if os.Getuid() != uid || os.Geteuid() != uid {
		return errors.New("the agent is still root after dropping privileges")
	}
	return nil
}

// dropBoundingSet empties the capability bounding set of every thread
// (it is per thread), where the agent may (CAP_SETPCAP): nothing the agent
// starts can then hold a capability, even through a file's. Without
// SETPCAP it is left as the runtime made it.
func dropBoundingSet() error {
	for c := 0; c <= unix.CAP_LAST_CAP; c++ {
		if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0); e != 0 {
			switch e {
			case syscall.EINVAL: // past the kernel's last capability
				return nil
			case syscall.EPERM: // no CAP_SETPCAP
				return nil
			case syscall.ENOTSUP: // a cgo build: this thread only
				_ = unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0)
				continue
			}
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, e)
		}
	}
	return nil
}

// InstallSelf copies the running executable to path (mode 0555): how an
// init container from Berth's own image (a static binary on an empty base,
// with no cp) puts the agent into a volume that the sandbox's container,
// of another image, runs it from.
func InstallSelf(path string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	src, err := os.Open(self)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp := path + ".tmp"
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o555)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	if err := dst.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
