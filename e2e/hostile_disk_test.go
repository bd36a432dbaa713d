package e2e

import (
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/dataplane"
	"github.com/berth-dev/berth/server"
)

// TestHostileDisk: a session that fills its disk, in bytes or in files,
// through /mnt/data or /tmp, is stopped at its pool's --disk, told so
// (DiskFull), costs the host no more than that, leaves other sessions
// working, and recovers once it deletes files. Its disk is unmounted and
// detached when it ends, and after a crash by the next start.
func TestHostileDisk(t *testing.T) {
	b := startBerth(t, "")
	// Every sandbox of the server is then one of this test's sessions (a
	// bwrap sandbox's directory does not name its pool).
	b.cli("pool", "delete", "default")
	state := filepath.Join("/var/lib/berth", server.Instance(b.dataDir))
	const diskMiB = 64
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			name := "disk-" + rt
			key := b.createPool(name, "--runtime", rt, "--ready", "0", "--memory", "256Mi", "--disk", "64Mi", "--timeout", "60s")
			neighbour := func() {
				t.Helper()
				if r := b.execute(name, key, "neighbour", "head -c 8M /dev/zero > /mnt/data/n && rm /mnt/data/n && echo alive"); r.Stdout != "alive\n" {
					t.Fatalf("neighbour session broke: %+v", r)
				}
			}
			neighbour()
			sessionDirs := filepath.Join(state, rt, "sb-*")

			diskFull := func(t *testing.T, r dataplane.ExecuteResult, what string) {
				t.Helper()
				if r.Status == "Success" && (r.ExitCode == nil || *r.ExitCode == 0) {
					t.Fatalf("%s succeeded past the disk limit: %+v", what, r)
				}
				if !strings.Contains(r.Stderr, "No space left on device") {
					t.Errorf("%s: no ENOSPC inside: %q", what, r.Stderr)
				}
				if r.Error == nil || r.Error.Type != "DiskFull" || !strings.Contains(r.Error.Message, "disk full") {
					t.Errorf("%s: not reported as DiskFull: %+v", what, r.Error)
				}
			}
			for _, target := range []string{"/mnt/data", "/tmp"} {
				t.Run("bytes in "+target, func(t *testing.T) {
					r := b.execute(name, key, "filler", "head -c 200M /dev/zero > "+target+"/big")
					diskFull(t, r, "a 200 MiB write to "+target)
					used := allocatedUnder(t, sessionDirs)
					t.Logf("host disk used by the sessions: %d MiB", used>>20)
					if used > (diskMiB+4)<<20 {
						t.Errorf("the host holds %d MiB for sessions whose disk is %d MiB", used>>20, diskMiB)
					}
					neighbour()
					// It recovers once it deletes files.
					r = b.execute(name, key, "filler", "rm "+target+"/big && head -c 1M /dev/zero > "+target+"/small && echo ok")
					if r.Stdout != "ok\n" || r.Error != nil {
						t.Fatalf("no recovery after deleting: %+v", r)
					}
				})
			}
			t.Run("upload", func(t *testing.T) {
				r := b.upload(name, key, "filler", "big.bin", io.LimitReader(zeros{}, 100<<20))
				if r.Status != http.StatusInsufficientStorage || r.errorCode() != "DiskFull" || !strings.Contains(string(r.Body), "disk is full") {
					t.Fatalf("a 100 MiB upload to a 64 MiB disk: %d %s", r.Status, r.Body)
				}
				if r := b.execute(name, key, "filler", "ls -A /mnt/data; df -k /mnt/data | tail -1"); strings.Contains(r.Stdout, "berth-upload") {
					t.Fatalf("the failed upload left a file: %q", r.Stdout)
				}
				if r := b.upload(name, key, "filler", "small.bin", strings.NewReader("fits")); r.Status != http.StatusOK {
					t.Fatalf("upload after a failed one: %d %s", r.Status, r.Body)
				}
			})
			t.Run("files", func(t *testing.T) {
				// 64 MiB hold 4,096 files.
				r := b.execute(name, key, "filler", "mkdir -p /mnt/data/many && cd /mnt/data/many && for i in $(seq 1 20000); do : > f$i || exit 1; done")
				diskFull(t, r, "20,000 files")
				if r.Error != nil && !strings.Contains(r.Error.Message, "files used") {
					t.Errorf("the report does not say files ran out: %q", r.Error.Message)
				}
				neighbour()
				r = b.execute(name, key, "filler", "rm -rf /mnt/data/many && : > /mnt/data/one && echo ok")
				if r.Stdout != "ok\n" || r.Error != nil {
					t.Fatalf("no recovery after deleting: %+v", r)
				}
			})

			t.Run("no other writable space", func(t *testing.T) {
				// Only the disk (and /dev/shm, in memory) takes writes: the
				// root and /dev would be space beyond the quota.
				r := b.execute(name, key, "filler", "for d in / /dev /etc /usr /var /.berth; do touch $d/x 2>/dev/null && echo WROTE $d; mkdir $d/y 2>/dev/null && echo MKDIR $d; done; echo done")
				if r.Stdout != "done\n" {
					t.Fatalf("writable outside the disk: %q", r.Stdout)
				}
			})
			t.Run("teardown", func(t *testing.T) {
				if len(mountsUnder(sessionDirs)) == 0 || len(loopsUnder(sessionDirs)) == 0 {
					t.Fatalf("no disk mounted for the live sessions (mounts %v, loops %v)", mountsUnder(sessionDirs), loopsUnder(sessionDirs))
				}
				for _, id := range []string{"filler", "neighbour"} {
					if d := b.do("DELETE", "/pools/"+name+"/sessions/"+id, keyHeader(key), nil); d.Status != 204 {
						t.Fatalf("delete session: %d %s", d.Status, d.Body)
					}
				}
				waitNone(t, "mounts and loop devices of ended sessions", func() []string {
					return append(mountsUnder(sessionDirs), loopsUnder(sessionDirs)...)
				})
			})
		})
	}

	// A crash leaves disks mounted; the next start removes them.
	for _, rt := range runtimes {
		b.execute("disk-"+rt, strings.TrimSpace(b.cli("pool", "credentials", "disk-"+rt)), "crash-victim", "echo x > /mnt/data/x")
	}
	all := filepath.Join(state, "*", "sb-*")
	if len(mountsUnder(all)) == 0 {
		t.Fatal("no mounts before the crash?")
	}
	_ = b.cmd.Process.Kill()
	<-b.exited
	b2 := startBerth(t, b.dataDir)
	b2.stop()
	if m, l := mountsUnder(filepath.Join(state, "*")), loopsUnder(filepath.Join(state, "*")); len(m)+len(l) > 0 {
		t.Fatalf("left after a crash, a restart and a stop: mounts %v, loop devices %v", m, l)
	}
}

// allocatedUnder is the host disk space that files in the directories
// matching pattern take, not counting what is mounted below them.
func allocatedUnder(t *testing.T, pattern string) int64 {
	t.Helper()
	syscall.Sync() // the sandboxes' file systems to their images
	dirs, _ := filepath.Glob(pattern)
	var total int64
	for _, dir := range dirs {
		var root syscall.Stat_t
		if err := syscall.Stat(dir, &root); err != nil {
			continue
		}
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			var st syscall.Stat_t
			if syscall.Lstat(p, &st) != nil {
				return nil
			}
			if st.Dev != root.Dev {
				return fs.SkipDir // a mount: its files are in its image
			}
			total += st.Blocks * 512
			return nil
		})
	}
	return total
}

// mountsUnder lists the mount points inside directories matching pattern.
func mountsUnder(pattern string) []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		if under(f[4], pattern) {
			out = append(out, f[4])
		}
	}
	return out
}

// loopsUnder lists the loop devices whose backing file is inside
// directories matching pattern.
func loopsUnder(pattern string) []string {
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && under(strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)"), pattern) {
			out = append(out, strings.Split(f, "/")[3])
		}
	}
	return out
}

// under reports whether path is inside a directory that matches pattern.
func under(path, pattern string) bool {
	n := strings.Count(pattern, "/")
	parts := strings.Split(path, "/")
	if len(parts) <= n+1 {
		return false
	}
	ok, _ := filepath.Match(pattern, strings.Join(parts[:n+1], "/"))
	return ok
}

func waitNone(t *testing.T, what string, list func() []string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		l := list()
		if len(l) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s left: %v", what, l)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
