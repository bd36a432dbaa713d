package egress_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/egress"
	"github.com/berth-dev/berth/internal/testutil"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/bwrap"
	"github.com/berth-dev/berth/sandbox/gvisor"
)

// mapSecrets is the tests' secret store.
type mapSecrets map[string]string

func (m mapSecrets) Secret(_ context.Context, scope, name string) ([]byte, error) {
	v, ok := m[scope+"/"+name]
	if !ok {
		return nil, fmt.Errorf("no secret %s in %s", name, scope)
	}
	return []byte(v), nil
}

func runtimes(t testing.TB) map[string]sandbox.Runtime {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "nft")
	agentPath := testutil.AgentBinary(t)
	rts := map[string]sandbox.Runtime{}
	tag := strconv.FormatInt(time.Now().UnixNano()%1e5, 36)
	bo := bwrap.Options{}
	bo.Instance, bo.StateDir, bo.AgentPath = "egw"+tag, t.TempDir(), agentPath
	if rt, err := bwrap.New(bo); err == nil {
		rts["bwrap"] = rt
	} else {
		t.Logf("bwrap: %v", err)
	}
	runsc := filepath.Join(testutil.ModuleRoot(), ".bin", "runsc")
	if _, err := os.Stat(runsc); err == nil {
		gdir := filepath.Join("/var/lib/berth", "egg"+tag) // runsc's paths must be short
		_ = os.MkdirAll(gdir, 0o755)
		t.Cleanup(func() { _ = os.RemoveAll(gdir) })
		g := gvisor.Options{Runsc: runsc}
		g.Instance, g.StateDir, g.AgentPath = "egg"+tag, gdir, agentPath
		if rt, err := gvisor.New(g); err == nil {
			rts["gvisor"] = rt
		} else {
			t.Logf("gvisor: %v", err)
		}
	}
	for _, rt := range rts {
		t.Cleanup(func() { _ = rt.Cleanup(context.Background()) })
	}
	if len(rts) == 0 {
		t.Skip("no sandbox runtime")
	}
	return rts
}

func startBox(t testing.TB, rt sandbox.Runtime, id string, px sandbox.EgressProxy) sandbox.Sandbox {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sb, err := rt.Start(ctx, sandbox.Spec{ID: id, Egress: true, EgressProxy: px,
		Limits: sandbox.Limits{MemoryBytes: 256 << 20, DiskBytes: 64 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Destroy(context.Background()) })
	return sb
}

func run(t testing.TB, sb sandbox.Sandbox, code string) *agent.Output {
	t.Helper()
	out, err := sb.Agent().Exec(context.Background(), agent.ExecRequest{Language: agent.Shell, Code: code, TimeoutMillis: 60000}, nil)
	if err != nil {
		t.Fatalf("exec %q: %v", code, err)
	}
	return out
}

const secret = "ghp_SECRET_9f3c1b7e2d5a8f0c4e6b"

func newService(t testing.TB, u *upstream, dnsAddr string, sec egress.Secrets) (*egress.Service, string) {
	dir := t.TempDir()
	return egress.New(egress.Options{Dir: dir, Secrets: sec, Resolver: resolverAt(dnsAddr), UpstreamRoots: u.roots}), dir
}

// TestAllowList: names in the allow-list are reached, through the proxy
// (HTTPS_PROXY) and transparently; everything else is refused, whatever
// the sandbox's DNS or the proxy's resolver says.
func TestAllowList(t *testing.T) {
	rts := runtimes(t)
	u := startUpstream(t)
	svc, _ := newService(t, u, testDNS(t), mapSecrets{})
	px, err := svc.Proxy("pool/allow", egress.Policy{Allow: []string{"up.test", "*.trick.test", "trick.test", "hosttrick.test", "meta.test"}})
	if err != nil {
		t.Fatal(err)
	}
	px2, err := svc.Proxy("pool/allow2", egress.Policy{Allow: []string{"notallowed.test"}})
	if err != nil {
		t.Fatal(err)
	}
	for name, rt := range rts {
		t.Run(name, func(t *testing.T) {
			sb := startBox(t, rt, "allow-"+name, px)
			run(t, sb, "cat > /tmp/up-ca.pem <<'EOF'\n"+string(u.caPEM)+"EOF")
			cases := []struct {
				name, code, want string
			}{
				{"allowed via proxy", "curl -sS --max-time 20 --cacert /tmp/up-ca.pem https://up.test/", "UPSTREAM-OK host=up.test tls=true"},
				{"allowed plain http via proxy", "curl -sS --max-time 20 http://up.test/", "UPSTREAM-OK host=up.test tls=false"},
				{"disallowed via proxy", "curl -sS --max-time 20 https://notallowed.test/ 2>&1; echo; curl -sS --max-time 20 http://notallowed.test/",
					"not in this sandbox's egress allow-list"},
				{"ip literal", "curl -sS --max-time 20 -k https://" + upstreamIP + "/ 2>&1; curl -sS --max-time 20 http://" + upstreamIP + "/",
					"is an IP address"},
				{"allowed name to loopback", "curl -sS --max-time 20 http://trick.test/", "resolves to 127.0.0.1, a loopback address"},
				{"allowed name to the host", "curl -sS --max-time 20 http://hosttrick.test/", "resolves to " + hostSideIP + ", an address of the Berth host"},
				{"allowed name to metadata", "curl -sS --max-time 20 http://meta.test/", "a cloud metadata address"},
				{"transparent, sandbox's DNS", "curl -sS --noproxy '*' --max-time 20 --cacert /tmp/up-ca.pem https://up.test/", "UPSTREAM-OK host=up.test tls=true"},
				{"transparent http", "curl -sS --noproxy '*' --max-time 20 http://up.test/", "UPSTREAM-OK host=up.test tls=false"},
				{"sandbox's DNS refuses", "getent hosts notallowed.test || echo NXDOMAIN", "NXDOMAIN"},
				{"transparent, forged address", "curl -sS --noproxy '*' --max-time 20 --cacert /tmp/up-ca.pem --resolve notallowed.test:443:" + upstreamIP + " https://notallowed.test/ 2>&1",
					"alert access denied"},
				{"transparent, allowed name forged to loopback, TLS", "curl -sS --noproxy '*' --max-time 20 --cacert /tmp/up-ca.pem --resolve trick.test:443:" + upstreamIP + " https://trick.test/ 2>&1",
					"alert access denied"},
				{"transparent, allowed name forged to loopback", "curl -sS --noproxy '*' --max-time 20 --resolve trick.test:80:" + upstreamIP + " http://trick.test/ 2>&1",
					"a loopback address"},
				{"raw socket, other port", rawConnect(upstreamIP, 8443), "REFUSED"},
				{"raw socket, 443 without TLS", rawConnect(upstreamIP, 443), "REFUSED"},
			}
			// Another sandbox's proxy, whose rules allow notallowed.test, is
			// out of reach.
			other := startBox(t, rt, "allow2-"+name, px2)
			otherProxy := strings.TrimSpace(run(t, other, "echo $HTTPS_PROXY").Stdout)
			if !strings.HasPrefix(otherProxy, "http://100.") {
				t.Fatalf("other sandbox's proxy: %q", otherProxy)
			}
			if out := run(t, other, "curl -sS --max-time 20 http://notallowed.test/"); !strings.Contains(out.Stdout, "UPSTREAM-OK") {
				t.Fatalf("other sandbox cannot use its own proxy: %s %s", out.Stdout, out.Stderr)
			}
			cases = append(cases, struct{ name, code, want string }{"another sandbox's proxy",
				"curl -sS --max-time 5 -x " + otherProxy + " http://notallowed.test/ 2>&1 || echo REFUSED", "REFUSED"})
			for _, c := range cases {
				out := run(t, sb, c.code)
				got := out.Stdout + out.Stderr
				if !strings.Contains(got, c.want) || strings.Contains(c.want, "REFUSED") && strings.Contains(got, "UPSTREAM") {
					t.Errorf("%s: want %q in:\n%s", c.name, c.want, got)
				}
			}
		})
	}
}

// rawConnect is code that ignores every proxy setting: a TCP connection to
// addr:port, a line sent, whatever comes back printed.
func rawConnect(addr string, port int) string {
	return fmt.Sprintf(`python3 - <<'EOF'
import socket
try:
    s = socket.create_connection((%q, %d), timeout=5)
    s.sendall(b"GET / HTTP/1.0\r\nHost: up.test\r\n\r\n")
    data = s.recv(200)
    print("GOT:" + data.decode(errors="replace") if data else "REFUSED (closed)")
except OSError as e:
    print("REFUSED", type(e).__name__)
EOF`, addr, port)
}

// TestInject: the proxy adds the secret's header to HTTPS requests to the
// host, and the secret is nowhere the sandbox can look: its environment,
// its files, its processes' memory (scanned from the host). Nor is the
// CA's private key.
func TestInject(t *testing.T) {
	rts := runtimes(t)
	u := startUpstream(t)
	svc, dir := newService(t, u, testDNS(t), mapSecrets{"pool/inj/GH": "Bearer " + secret})
	px, err := svc.Proxy("pool/inj", egress.Policy{
		Allow:  []string{"up.test", "inject.test"},
		Inject: []egress.Inject{{Host: "inject.test", Header: "Authorization", Secret: "GH"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "pool_inj", "ca.key")
	key, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(keyFile); fi.Mode().Perm() != 0o600 {
		t.Errorf("CA key mode %v, want 0600", fi.Mode().Perm())
	}
	keyLine := strings.Split(string(key), "\n")[1] // a line of the key's base64
	for name, rt := range rts {
		t.Run(name, func(t *testing.T) {
			sb := startBox(t, rt, "inj-"+name, px)
			for _, code := range []string{
				"curl -sS --max-time 20 https://inject.test/",               // through HTTPS_PROXY
				"curl -sS --noproxy '*' --max-time 20 https://inject.test/", // transparent
				"python3 -c 'import urllib.request as u; print(u.urlopen(\"https://inject.test/\").read().decode())'",
			} {
				out := run(t, sb, code)
				if !strings.Contains(out.Stdout, "UPSTREAM-OK host=inject.test tls=true") {
					t.Fatalf("%s: %s %s", code, out.Stdout, out.Stderr)
				}
			}
			if n := strings.Count(u.Seen(), fmt.Sprintf("SEEN inject.test %q", "Bearer "+secret)); n < 3 {
				t.Fatalf("upstream saw the header %d times, want 3:\n%s", n, u.Seen())
			}
			// Not injected for a host without a rule.
			run(t, sb, "curl -sS --max-time 20 -k https://up.test/")
			if strings.Contains(u.Seen(), "SEEN up.test \"Bearer") {
				t.Fatalf("header injected for another host:\n%s", u.Seen())
			}

			// A process that holds a marker in its memory: the scan below
			// must find it, or it proves nothing.
			marker := "MARKER_" + rand.Text()
			run(t, sb, "nohup python3 -c 'import time; x = \"MARK\" + \"ER_"+strings.TrimPrefix(marker, "MARKER_")+"\" * 3; time.sleep(120)' >/dev/null 2>&1 &")
			time.Sleep(time.Second)
			mem := scanMemory(t, sb.ID(), marker, secret, keyLine)
			if !mem[marker] {
				t.Fatalf("the memory scan did not find the marker: it cannot vouch for the secret")
			}
			if mem[secret] || mem[keyLine] {
				t.Errorf("sandbox memory holds the secret (%v) or the CA key (%v)", mem[secret], mem[keyLine])
			}
			out := run(t, sb, "env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'")
			if strings.Contains(out.Stdout, secret) || !strings.Contains(out.Stdout, "SSL_CERT_FILE="+sandbox.EgressCAPath) {
				t.Errorf("environment: %s", out.Stdout)
			}
			// Every file the sandbox can see but the host's read-only /usr
			// (6 GB here, which the test never writes to).
			// The patterns are split, so that the script the agent writes for
			// this command does not hold them whole.
			// A canary file the grep must list, or it proves nothing.
			out = run(t, sb, fmt.Sprintf("echo CANARY_\"\"FILE > /mnt/data/canary; A=%q; B=%q; C=%q; D=%q; grep -rlsF -e \"$A$B\" -e \"$C$D\" -e CANARY_\"\"FILE / --exclude-dir=proc --exclude-dir=sys --exclude-dir=usr; echo GREP-DONE $?; cat %q 2>&1; ls %q 2>&1",
				secret[:6], secret[6:], keyLine[:10], keyLine[10:], keyFile, dir))
			// grep lists matching files before GREP-DONE (exit 2: some
			// file was unreadable to the sandbox, which is fine).
			listed, _, ok := strings.Cut(out.Stdout, "GREP-DONE")
			if !ok || strings.TrimSpace(listed) != "/mnt/data/canary" || !strings.Contains(out.Stdout, "No such file") {
				t.Errorf("files: %s %s", out.Stdout, out.Stderr)
			}
		})
	}
}

// scanMemory reads the memory of every process in the sandbox's cgroup
// from the host: their private mappings through /proc/PID/mem, and their
// memory files (gVisor's sentry keeps the guest's memory in one) by their
// populated extents. It reports which needles it found.
func scanMemory(t *testing.T, id string, needles ...string) map[string]bool {
	t.Helper()
	found := map[string]bool{}
	look := func(buf []byte) {
		for _, nd := range needles {
			if bytes.Contains(buf, []byte(nd)) {
				found[nd] = true
			}
		}
	}
	cgs, _ := filepath.Glob("/proc/[0-9]*/cgroup")
	scanned := 0
	for _, cg := range cgs {
		b, err := os.ReadFile(cg)
		if err != nil || !bytes.Contains(b, []byte(id)) {
			continue
		}
		dir := filepath.Dir(cg)
		scanned++
		scanPrivate(dir, look)
		fds, _ := filepath.Glob(dir + "/fd/*")
		for _, fd := range fds {
			if l, _ := os.Readlink(fd); strings.HasPrefix(l, "/memfd:") {
				scanMemfd(fd, look)
			}
		}
	}
	if scanned == 0 {
		t.Fatalf("no process of sandbox %s found", id)
	}
	keys := make([]string, 0, len(found))
	for k := range found {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	t.Logf("scanned %d processes; found %v", scanned, keys)
	return found
}

// scanPrivate reads a process's readable private mappings (shared ones are
// files, read by scanMemfd; reading them through mem would allocate).
func scanPrivate(dir string, look func([]byte)) {
	maps, err := os.ReadFile(dir + "/maps")
	if err != nil {
		return
	}
	mem, err := os.Open(dir + "/mem")
	if err != nil {
		return
	}
	defer mem.Close()
	re := regexp.MustCompile(`^([0-9a-f]+)-([0-9a-f]+) r..p`)
	for _, line := range strings.Split(string(maps), "\n") {
		m := re.FindStringSubmatch(line)
		if m == nil || strings.Contains(line, "[vvar]") || strings.Contains(line, "[vsyscall]") {
			continue
		}
		lo, _ := strconv.ParseUint(m[1], 16, 64)
		hi, _ := strconv.ParseUint(m[2], 16, 64)
		for off := lo; off < hi; off += 1 << 22 {
			buf := make([]byte, min(hi-off, 1<<22)+64)
			k, _ := mem.ReadAt(buf[:min(hi-off, 1<<22)], int64(off))
			look(buf[:k])
		}
	}
}

// scanMemfd reads the populated extents of a memory file.
func scanMemfd(path string, look func([]byte)) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	fd := int(f.Fd())
	var off int64
	for {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err != nil {
			return
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return
		}
		for p := data; p < hole; p += 1 << 22 {
			buf := make([]byte, min(hole-p, 1<<22))
			k, _ := f.ReadAt(buf, p)
			look(buf[:k])
		}
		off = hole
	}
}
