// Package testutil has helpers for Berth's tests: a static berth binary to
// run as the sandbox agent or as a server, and checks for what the tests
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

// BerthBinary builds ./cmd/berth statically (CGO_ENABLED=0, as the agent
// must be) once per test process and returns its path.
func BerthBinary(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "berth-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "berth")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/berth")
		cmd.Dir = ModuleRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/berth: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return binPath
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
