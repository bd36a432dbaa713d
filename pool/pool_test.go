package pool_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/internal/testutil"
	"github.com/berth-dev/berth/pool"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/bwrap"
	"github.com/berth-dev/berth/store"
)

type env struct {
	st  *store.Store
	rts map[string]sandbox.Runtime
	dir string
	mgr *pool.Manager
}

func newEnv(t *testing.T) *env {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "bwrap")
	o := bwrap.Options{}
	o.Instance = "pool" + fmt.Sprint(time.Now().UnixNano()%1e6)
	o.StateDir = t.TempDir()
	o.AgentPath = testutil.AgentBinary(t)
	rt, err := bwrap.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Cleanup(context.Background()) })
	dir := t.TempDir()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{st: st, dir: dir, rts: map[string]sandbox.Runtime{"bwrap": rt}}
	e.mgr = pool.NewManager(pool.Options{Store: st, Runtimes: e.rts})
	t.Cleanup(e.mgr.Close)
	return e
}

func (e *env) create(t *testing.T, cfg pool.Config) (*pool.Pool, string) {
	t.Helper()
	p, key, err := e.mgr.Create(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p, key
}

func sh(t *testing.T, s *pool.Session, code string) *pool.Execution {
	t.Helper()
	x, err := s.Exec(context.Background(), agent.Shell, code, nil, pool.ExecOptions{})
	if err != nil {
		t.Fatalf("exec %q: %v", code, err)
	}
	return x
}

func session(t *testing.T, p *pool.Pool, id string) *pool.Session {
	t.Helper()
	s, err := p.Session(context.Background(), id)
	if err != nil {
		t.Fatalf("session %q: %v", id, err)
	}
	return s
}

func TestStatePerIdentifier(t *testing.T) {
	e := newEnv(t)
	p, _ := e.create(t, pool.Config{Name: "state", Ready: 1})
	a, b := session(t, p, "alpha-1"), session(t, p, "bravo-2")
	sh(t, a, "mkdir -p /mnt/data/sub && cd /mnt/data/sub && export SECRET=a-only && echo a > /mnt/data/mine.txt")
	if x := sh(t, a, `echo "$PWD $SECRET"; cat /mnt/data/mine.txt`); x.Stdout != "/mnt/data/sub a-only\na\n" {
		t.Fatalf("state did not persist: %q", x.Stdout)
	}
	if x := sh(t, b, `echo "$PWD [$SECRET]"; ls /mnt/data; cat /mnt/data/mine.txt`); x.Stdout != "/mnt/data []\n" || x.ExitCode == 0 {
		t.Fatalf("another identifier sees a's state: %+v", x.Output)
	}
	// The same identifier reaches the same sandbox.
	if again := session(t, p, "alpha-1"); again != a {
		t.Fatal("same identifier got a different session")
	}
}

func TestCooldownDestroysSession(t *testing.T) {
	e := newEnv(t)
	p, _ := e.create(t, pool.Config{Name: "cool", Ready: 0, CooldownSeconds: 1})
	s := session(t, p, "short-lived")
	sh(t, s, "echo data > /mnt/data/f")
	deadline := time.Now().Add(15 * time.Second)
	for len(p.Sessions()) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("session still alive long after its cooldown")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := p.Lookup("short-lived"); !errors.Is(err, pool.ErrSessionNotFound) {
		t.Fatalf("Lookup after expiry: %v", err)
	}
	s2 := session(t, p, "short-lived")
	if x := sh(t, s2, "cat /mnt/data/f"); x.ExitCode == 0 {
		t.Fatalf("state survived the cooldown: %q", x.Stdout)
	}
}

func TestBusySessionIsNotReaped(t *testing.T) {
	e := newEnv(t)
	p, _ := e.create(t, pool.Config{Name: "busy", Ready: 0, CooldownSeconds: 1})
	s := session(t, p, "busy-one")
	if x := sh(t, s, "sleep 3; echo done"); x.Stdout != "done\n" {
		t.Fatalf("long execution was cut: %+v", x.Output)
	}
}

func TestMaxSessions(t *testing.T) {
	e := newEnv(t)
	p, _ := e.create(t, pool.Config{Name: "small", Ready: 1, Max: 2})
	session(t, p, "one-1")
	session(t, p, "two-2")
	_, err := p.Session(context.Background(), "three-3")
	if !errors.Is(err, pool.ErrPoolFull) {
		t.Fatalf("third session: %v, want ErrPoolFull", err)
	}
	if !strings.Contains(err.Error(), "2 of 2") {
		t.Fatalf("message does not say why: %v", err)
	}
	if err := p.DeleteSession("one-1"); err != nil {
		t.Fatal(err)
	}
	session(t, p, "three-3")
}

func TestIdentifiers(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"abcd", true},
		{"user-42|chat(7){x}[y];<z>&^%$#", true},
		{strings.Repeat("a", 128), true},
		{"abc", false},
		{strings.Repeat("a", 129), false},
		{"has space", false},
		{"user@example.com:chat/7", true},
		{`a_b.c@d:e!f+g=h~i?j,k'l"m*n` + "`", true},
		{"tab\tno", false},
		{"ünïcode", false},
		{"", false},
	} {
		err := pool.ValidIdentifier(tc.id)
		if (err == nil) != tc.ok {
			t.Errorf("ValidIdentifier(%q) = %v, want ok=%v", tc.id, err, tc.ok)
		}
		if err != nil && !errors.Is(err, pool.ErrBadIdentifier) {
			t.Errorf("error is not ErrBadIdentifier: %v", err)
		}
	}
}

func TestWarmPoolRefills(t *testing.T) {
	e := newEnv(t)
	p, _ := e.create(t, pool.Config{Name: "warm", Ready: 2})
	waitFor(t, "2 warm sandboxes", func() bool { return p.Stats().Warm == 2 })
	session(t, p, "takes-one")
	waitFor(t, "refill to 2 warm", func() bool { return p.Stats().Warm == 2 })
	if st := p.Stats(); st.Sessions != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestConcurrentFirstRequestsShareSession(t *testing.T) {
	e := newEnv(t)
	p, _ := e.create(t, pool.Config{Name: "race", Ready: 0})
	var wg sync.WaitGroup
	got := make([]*pool.Session, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := p.Session(context.Background(), "same-id")
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = s
		}()
	}
	wg.Wait()
	for _, s := range got {
		if s != got[0] {
			t.Fatal("concurrent first requests got different sessions")
		}
	}
	if n := len(p.Sessions()); n != 1 {
		t.Fatalf("%d sessions", n)
	}
}

func TestPythonPoolKeepsVariables(t *testing.T) {
	e := newEnv(t)
	p, _ := e.create(t, pool.Config{Name: "py", Type: pool.TypePython, Ready: 1})
	s := session(t, p, "notebook")
	run := func(code string) *pool.Execution {
		x, err := s.Exec(context.Background(), agent.Python, code, nil, pool.ExecOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	run("x = 40\nimport math")
	x := run("print('hi')\nx + 2")
	if x.Stdout != "hi\n" || string(x.Value) != "42" || x.Status != agent.StatusSuccess {
		t.Fatalf("got %+v value %s", x.Output, x.Value)
	}
	x = run("1/0")
	if x.Status != agent.StatusFailure || !strings.Contains(x.Stderr, "ZeroDivisionError") || strings.Contains(x.Stderr, "pydriver") {
		t.Fatalf("exception: %+v", x.Output)
	}
	if x := run("x"); string(x.Value) != "40" {
		t.Fatalf("state lost after an exception: %s", x.Value)
	}
}

func TestKeysAndRestart(t *testing.T) {
	e := newEnv(t)
	p, key := e.create(t, pool.Config{Name: "keys", Ready: 0})
	if !p.Authenticate(key) || p.Authenticate("wrong") || p.Authenticate("") {
		t.Fatal("authentication is wrong")
	}
	if got, err := e.mgr.Key(context.Background(), "keys"); err != nil || got != key {
		t.Fatalf("Key = %q, %v", got, err)
	}
	newKey, err := e.mgr.RotateKey(context.Background(), "keys")
	if err != nil {
		t.Fatal(err)
	}
	if p.Authenticate(key) || !p.Authenticate(newKey) {
		t.Fatal("rotation did not take effect at once")
	}
	// A new manager on the same store (a restart) has the pool and key.
	e.mgr.Close()
	m2 := pool.NewManager(pool.Options{Store: e.st, Runtimes: e.rts})
	defer m2.Close()
	if err := m2.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	p2, err := m2.Get("keys")
	if err != nil {
		t.Fatal(err)
	}
	if !p2.Authenticate(newKey) || p2.Authenticate(key) {
		t.Fatal("key did not survive the restart")
	}
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		cfg   pool.Config
		field string
	}{
		{pool.Config{Name: "Bad_Name"}, "name"},
		{pool.Config{Name: "ok", Type: "ruby"}, "type"},
		{pool.Config{Name: "ok", Ready: 5, Max: 2}, "readySessions"},
		{pool.Config{Name: "ok", Egress: "maybe"}, "egress"},
		{pool.Config{Name: "ok", Egress: "allow=*"}, "egress"},
		{pool.Config{Name: "ok", Egress: "allow=a.example", EgressInject: []string{"b.example:X=secretref:S"}}, "egress"},
		{pool.Config{Name: "ok", MemoryBytes: 1}, "memoryBytes"},
		{pool.Config{Name: "ok", CPU: 100}, "cpu"},
		{pool.Config{Name: "ok", MCPAuth: "oauth"}, "mcpAuth"},
		{pool.Config{Name: "ok", Auth: "jwt"}, "auth"},
		{pool.Config{Name: "ok", Auth: "oidc"}, "auth"},
		{pool.Config{Name: "ok", Auth: "key,oidc", OIDC: &pool.OIDC{Issuer: "http://idp.example.com", Audience: "a"}}, "oidc"},
		{pool.Config{Name: "ok", Auth: "oidc", OIDC: &pool.OIDC{Issuer: "https://idp.example.com"}}, "oidc"},
		{pool.Config{Name: "ok", Auth: "oidc", OIDC: &pool.OIDC{Issuer: "idp.example.com", Audience: "a"}}, "oidc"},
	} {
		err := tc.cfg.Normalize()
		var ce *pool.ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("%+v: got %v, want an error about %s", tc.cfg, err, tc.field)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestUpdateDrainsWarm: after an update that changes what a sandbox is
// (egress), no session gets a warm sandbox of the old shape, and the pool
// refills with the new one.
func TestUpdateDrainsWarm(t *testing.T) {
	e := newEnv(t)
	p, _ := e.create(t, pool.Config{Name: "drain", Ready: 2, Egress: "enabled"})
	waitWarm := func() {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for st := p.Stats(); st.Warm != 2 || st.Starting != 0; st = p.Stats() {
			if time.Now().After(deadline) {
				t.Fatalf("warm: %+v", st)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	ifaces := func(id string) string {
		x := sh(t, session(t, p, id), `tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\n' ,`)
		return x.Stdout
	}
	waitWarm()
	if _, err := e.mgr.Update(context.Background(), "drain", func(c *pool.Config) { c.Egress = "disabled" }); err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{"new-1", "new-2", "new-3", "new-4"} {
		if got := ifaces(id); got != "lo," {
			t.Fatalf("session %d after the update: interfaces %q, want only lo", i+1, got)
		}
		if i == 1 {
			waitWarm()
		}
	}
}

// switchLeader is a leader.Checker a test flips.
type switchLeader struct{ on atomic.Bool }

func (s *switchLeader) IsLeader() bool { return s.on.Load() }

// TestCooldownOnlyWhileLeader: a Berth replica that does not lead expires
// no idle session; once it leads, it does.
func TestCooldownOnlyWhileLeader(t *testing.T) {
	e := newEnv(t)
	lead := &switchLeader{}
	e.mgr = pool.NewManager(pool.Options{Store: e.st, Runtimes: e.rts, Leader: lead})
	t.Cleanup(e.mgr.Close)
	p, _ := e.create(t, pool.Config{Name: "led", Ready: 0, CooldownSeconds: 1})
	session(t, p, "idle-one")
	time.Sleep(3 * time.Second)
	if len(p.Sessions()) != 1 {
		t.Fatal("a replica that does not lead expired an idle session")
	}
	lead.on.Store(true)
	deadline := time.Now().Add(10 * time.Second)
	for len(p.Sessions()) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the leader did not expire the idle session")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
