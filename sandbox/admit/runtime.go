package admit

import (
	"context"
	"sync"

	"github.com/berth-dev/berth/sandbox"
)

// Runtime wraps rt so that every sandbox it starts holds its share of the
// budget from Start until Destroy. defaults are rt's limits for the zero
// fields of a spec's.
func (b *Budget) Runtime(rt sandbox.Runtime, defaults sandbox.Limits) sandbox.Runtime {
	return &runtime{Runtime: rt, b: b, defaults: defaults}
}

type runtime struct {
	sandbox.Runtime
	b        *Budget
	defaults sandbox.Limits
}

// Start implements sandbox.Runtime.
// Unwrap returns the wrapped runtime (see sandbox.Unwrap).
func (r *runtime) Unwrap() sandbox.Runtime { return r.Runtime }

func (r *runtime) Start(ctx context.Context, spec sandbox.Spec) (sandbox.Sandbox, error) {
	l := spec.Limits.WithDefaults(r.defaults)
	release, err := r.b.Reserve(l.MemoryBytes, l.DiskBytes)
	if err != nil {
		return nil, err
	}
	sb, err := r.Runtime.Start(ctx, spec)
	if err != nil {
		release()
		return nil, err
	}
	return &admitted{Sandbox: sb, release: release}, nil
}

// admitted is a sandbox that gives its share back when destroyed.
type admitted struct {
	sandbox.Sandbox
	release func()
	once    sync.Once
}

func (a *admitted) Destroy(ctx context.Context) error {
	err := a.Sandbox.Destroy(ctx)
	a.once.Do(a.release)
	return err
}

// Stats implements sandbox.StatsReporter when the sandbox does.
func (a *admitted) Stats() sandbox.Stats {
	if r, ok := a.Sandbox.(sandbox.StatsReporter); ok {
		return r.Stats()
	}
	return sandbox.Stats{}
}

// Addr is the agent's address when the sandbox has one (agentaddr).
func (a *admitted) Addr() string {
	if ad, ok := a.Sandbox.(interface{ Addr() string }); ok {
		return ad.Addr()
	}
	return ""
}
