// Package testutil has helpers for Berth's tests: static berth and
// berth-agent binaries to run as a server and as the sandbox agent, and checks for what the tests
// need from the host.
package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// ModuleRoot returns the repository's root directory.
func ModuleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// BerthBinary builds ./cmd/berth and ./cmd/berth-agent statically
// (CGO_ENABLED=0, as the agent must be) into one directory, once per test
// process, and returns berth's path: a berth up started from it runs the
// berth-agent beside it in its sandboxes, as an installed one does.
func BerthBinary(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "berth-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "berth")
		cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/berth", "./cmd/berth-agent")
		cmd.Dir = ModuleRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/berth ./cmd/berth-agent: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return binPath
}

// AgentBinary is the berth-agent built beside BerthBinary: what a driver
// runs as the agent in its sandboxes.
func AgentBinary(tb testing.TB) string {
	tb.Helper()
	return filepath.Join(filepath.Dir(BerthBinary(tb)), "berth-agent")
}

// RequireRoot skips the test unless it runs as root, which the sandbox
// runtimes need (cgroups, uids, namespaces).
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: sandboxes use cgroups, dedicated uids and namespaces")
	}
}

// RequireTool fails the test (it does not skip: the test command installs
// every tool) when a program is missing.
func RequireTool(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		tb.Fatalf("%s is not installed; run `make test`, which installs it", name)
	}
	return p
}
