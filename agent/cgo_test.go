//go:build cgo

package agent_test

// withCgo: DropPrivileges cannot set no_new_privs on every thread of a
// cgo build (syscall.AllThreadsSyscall refuses), only on the one it runs.
const withCgo = true
