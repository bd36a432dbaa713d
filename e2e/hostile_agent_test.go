package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestHostileAgentSocket: code in a session replaces its agent's socket
// with a symlink to another session's socket (relative, then absolute).
// The host must keep reaching the session's own sandbox (or lose the
// session cleanly), never the other one.
func TestHostileAgentSocket(t *testing.T) {
	b := startBerth(t, "")
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			name := "sockswap-" + rt
			key := b.createPool(name, "--runtime", rt, "--ready", "0", "--timeout", "10s")
			tag := randomTag(t)
			// Each session leaves a marker in its socket directory, which
			// is how the test (on the host) finds their directories.
			for _, who := range []string{"victim", "attacker"} {
				r := b.execute(name, key, who, fmt.Sprintf("export WHO=%s; echo %s > /mnt/data/who; touch /.berth/run/%s-%s; echo ok", who, who, tag, who))
				if r.Stdout != "ok\n" {
					t.Fatalf("%s: %+v", who, r)
				}
			}
			victimRun := findMarker(t, tag+"-victim")
			attackerRun := findMarker(t, tag+"-attacker")
			rel, err := filepath.Rel(attackerRun, filepath.Join(victimRun, "agent.sock"))
			if err != nil {
				t.Fatal(err)
			}
			for _, target := range []string{rel, filepath.Join(victimRun, "agent.sock")} {
				r := b.execute(name, key, "attacker", fmt.Sprintf(
					"cd /.berth/run && ln -s %q agent.sock.new && mv -f agent.sock.new agent.sock && ls -l agent.sock", target))
				if !strings.Contains(r.Stdout, "->") {
					t.Fatalf("could not replace the socket: %+v", r)
				}
				// Several requests: fresh connections as well as kept ones.
				for i := range 3 {
					raw := b.executeRaw(name, key, "attacker", "echo who=$(cat /mnt/data/who) env=$WHO")
					if strings.Contains(string(raw.Body), "victim") {
						t.Fatalf("the attacker's execution ran in the victim's sandbox (%s, try %d): %s", target, i, raw.Body)
					}
					if raw.Status != 200 {
						t.Fatalf("execute after the swap: HTTP %d: %s", raw.Status, raw.Body)
					}
				}
			}
			if r := b.execute(name, key, "victim", "echo $WHO $(cat /mnt/data/who)"); r.Stdout != "victim victim\n" {
				t.Fatalf("victim: %+v", r)
			}
		})
	}
}

// findMarker returns the host directory that holds a file named marker, a
// sandbox's socket directory.
func findMarker(t *testing.T, marker string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, _ := filepath.Glob(filepath.Join("/var/lib/berth", "*", "*", "*", "run", marker))
		if len(m) == 1 {
			return filepath.Dir(m[0])
		}
		if time.Now().After(deadline) {
			t.Fatalf("marker %s: found %v", marker, m)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func randomTag(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "m" + hex.EncodeToString(b)
}

// abiProbe makes system calls through the i386 ABI (int 0x80) and the x32
// ABI (syscall with bit 30 set in the number) from a 64-bit process, with
// machine code run through ctypes. It prints "ABI NR RESULT".
const abiProbe = `cat > /tmp/abi.py <<'PY'
import ctypes, mmap, struct, sys
def call(code, nr):
    m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    m.write(code(nr))
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    return ctypes.CFUNCTYPE(ctypes.c_int)(addr)()
# push rbx; mov eax, nr; xor ebx,ebx; xor ecx,ecx; xor edx,edx; int 0x80; pop rbx; ret
i386 = lambda nr: b"\x53\xb8" + struct.pack("<I", nr) + b"\x31\xdb\x31\xc9\x31\xd2\xcd\x80\x5b\xc3"
# mov eax, nr|0x40000000; xor edi,edi; xor esi,esi; xor edx,edx; syscall; ret
x32 = lambda nr: b"\xb8" + struct.pack("<I", nr | 0x40000000) + b"\x31\xff\x31\xf6\x31\xd2\x0f\x05\xc3"
abi, nr = sys.argv[1], int(sys.argv[2])
print(abi, nr, call(i386 if abi == "i386" else x32, nr), flush=True)
PY
# i386: getpid, ptrace(TRACEME), keyctl, userfaultfd, io_uring_setup; x32: getpid, ptrace
for c in "i386 20" "i386 26" "i386 288" "i386 374" "i386 425" "x32 39" "x32 521"; do
  python3 /tmp/abi.py $c 2>/dev/null || echo "$c killed"
done
python3 -c 'import os; print("native", os.getpid() > 0)'`

// TestHostileSandboxSurface: what code in a session can learn or reach of
// the host beyond its own sandbox, on each runtime: system calls through
// other ABIs than the native one, host paths and the sandbox's name, and
// file descriptors inherited from the host or the agent.
func TestHostileSandboxSurface(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the probes are x86-64 machine code")
	}
	b := startBerth(t, "")
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			name := "surface-" + rt
			key := b.createPool(name, "--runtime", rt, "--ready", "0", "--timeout", "20s")

			t.Run("foreign syscall ABIs", func(t *testing.T) {
				r := b.execute(name, key, "abi-probe", abiProbe)
				lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
				if len(lines) != 8 || lines[7] != "native True" {
					t.Fatalf("probe: %+v", r)
				}
				for _, l := range lines[:7] {
					f := strings.Fields(l)
					// ENOSYS, EPERM, or the process killed: never a call
					// that reached the kernel.
					if len(f) != 3 || (f[2] != "-38" && f[2] != "-1" && f[2] != "killed") {
						t.Errorf("a system call through another ABI was not refused: %q", l)
					}
				}
			})

			t.Run("host paths and names", func(t *testing.T) {
				r := b.execute(name, key, "path-probe", "cat /proc/1/cmdline /proc/2/cmdline /proc/self/cmdline /proc/$$/cmdline; echo; cat /proc/1/environ /proc/$$/environ; echo; hostname")
				for _, leak := range []string{"/var/lib/berth", b.dataDir, name} {
					if strings.Contains(r.Stdout, leak) {
						t.Errorf("the sandbox sees %q:\n%s", leak, r.Stdout)
					}
				}
				leaks := []string{b.dataDir, name}
				if rt != "bwrap" {
					// bubblewrap's bind mounts show the state directory
					// in mountinfo (see README.md, Sandboxes).
					leaks = append(leaks, "/var/lib/berth")
				}
				r = b.execute(name, key, "path-probe", "cat /proc/self/mountinfo /proc/1/mountinfo")
				for _, leak := range leaks {
					if strings.Contains(r.Stdout, leak) {
						t.Errorf("the sandbox's mounts show %q:\n%s", leak, r.Stdout)
					}
				}
			})

			t.Run("the agent's process", func(t *testing.T) {
				// Code runs as the agent's uid: the agent must still be out
				// of its reach (its memory, its descriptors).
				r := b.execute(name, key, "agent-probe", `p=$(pgrep -x agent | head -1); echo "pid=${p:+found}"
ls -l /proc/$p/fd/ 2>/dev/null | grep -q -- '->' && echo FDS-VISIBLE
head -c1 /proc/$p/environ >/dev/null 2>&1 && echo ENVIRON-READABLE
python3 -c "open('/proc/$p/mem', 'r+b')" 2>/dev/null && echo MEM-WRITABLE
echo checked`)
				if r.Stdout != "pid=found\nchecked\n" {
					t.Errorf("user code reaches the agent's process: %q", r.Stdout)
				}
			})

			t.Run("kill the agent", func(t *testing.T) {
				// Under bubblewrap the sandbox ends with its agent; under
				// gVisor the agent is init and survives. Either way the
				// host answers at once, and the identifier works after.
				b.execute(name, key, "agent-killer", "echo before > /mnt/data/f")
				start := time.Now()
				raw := b.executeRaw(name, key, "agent-killer", "kill -9 $(pgrep -x agent); sleep 1; echo survived")
				if raw.Status != 200 && raw.Status != 410 {
					t.Fatalf("after killing the agent: HTTP %d: %s", raw.Status, raw.Body)
				}
				if d := time.Since(start); d > 15*time.Second {
					t.Fatalf("the host took %s to notice", d)
				}
				if r := b.execute(name, key, "agent-killer", "echo recovered"); r.Stdout != "recovered\n" {
					t.Fatalf("the identifier did not recover: %+v", r)
				}
			})

			t.Run("file descriptors", func(t *testing.T) {
				r := b.execute(name, key, "fd-probe", "ls /proc/self/fd | tr '\\n' ' '; echo; python3 -c 'import os; print(sorted(int(f) for f in os.listdir(\"/proc/self/fd\")))'")
				if r.Stdout != "0 1 2 3 \n[0, 1, 2, 3]\n" {
					t.Errorf("user code inherits file descriptors: %q", r.Stdout)
				}
			})
		})
	}
}
