package pool_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/pool"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/store"
)

// fakeRuntime starts "sandboxes" whose agent is a fake on a real Unix
// socket: it answers "flood" with output that never ends and anything else
// with the code echoed back.
type fakeRuntime struct {
	dir       string
	started   atomic.Int32
	destroyed atomic.Int32
}

func (r *fakeRuntime) Name() string                  { return "bwrap" }
func (r *fakeRuntime) Cleanup(context.Context) error { return nil }
func (r *fakeRuntime) RemoveVolumes(context.Context, string) error {
	return nil
}

func (r *fakeRuntime) Start(ctx context.Context, spec sandbox.Spec) (sandbox.Sandbox, error) {
	n := r.started.Add(1)
	sock := filepath.Join(r.dir, fmt.Sprintf("agent%d.sock", n))
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var er agent.ExecRequest
		_ = json.NewDecoder(req.Body).Decode(&er)
		enc := json.NewEncoder(w)
		if er.Code == "flood" {
			for enc.Encode(agent.Event{Stdout: strings.Repeat("x", 32<<10)}) == nil {
			}
			return
		}
		_ = enc.Encode(agent.Event{Stdout: er.Code})
		_ = enc.Encode(agent.Event{Result: &agent.Result{Status: agent.StatusSuccess}})
	})}
	go func() { _ = srv.Serve(ln) }()
	return &fakeBox{id: spec.ID, rt: r, srv: srv, client: agent.UnixClient(sock), done: make(chan struct{})}, nil
}

type fakeBox struct {
	id     string
	rt     *fakeRuntime
	srv    *http.Server
	client *agent.Client
	done   chan struct{}
	once   sync.Once
}

func (b *fakeBox) ID() string            { return b.id }
func (b *fakeBox) Agent() *agent.Client  { return b.client }
func (b *fakeBox) Done() <-chan struct{} { return b.done }
func (b *fakeBox) Destroy(context.Context) error {
	b.once.Do(func() {
		b.rt.destroyed.Add(1)
		_ = b.srv.Close()
		close(b.done)
	})
	return nil
}

// An agent that breaks the protocol (here: output past anything its cap
// allows) ends its session: the sandbox is destroyed, the caller is told
// the session is lost, and the identifier starts afresh.
func TestAgentProtocolViolationEndsSession(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rt := &fakeRuntime{dir: t.TempDir()}
	mgr := pool.NewManager(pool.Options{Store: st, Runtimes: map[string]sandbox.Runtime{"bwrap": rt}})
	defer mgr.Close()
	p, _, err := mgr.Create(context.Background(), pool.Config{Name: "fake"})
	if err != nil {
		t.Fatal(err)
	}
	s := session(t, p, "victim-1")
	if x := sh(t, s, "hello"); x.Stdout != "hello" {
		t.Fatalf("exec: %+v", x)
	}
	_, err = s.Exec(context.Background(), agent.Shell, "flood", nil, pool.ExecOptions{MaxOutputBytes: 1 << 10})
	if !errors.Is(err, pool.ErrSessionLost) {
		t.Fatalf("flood: %v", err)
	}
	waitFor(t, "the sandbox destroyed", func() bool { return rt.destroyed.Load() == 1 })
	if s2 := session(t, p, "victim-1"); s2 == s {
		t.Fatal("the identifier kept its session")
	} else if x := sh(t, s2, "again"); x.Stdout != "again" {
		t.Fatalf("exec in the new session: %+v", x)
	}
}
