// Package leader says whether this Berth process may run the loops that
// only one replica at a time should run: the pool reaper (cooldown) and
// the app autoscaler's scale-down and scale-to-zero. On one machine the
// process is always leader (Always); on Kubernetes the replicas elect one
// with client-go's leaderelection on a coordination.k8s.io Lease (Elect).
//
// The loops ask IsLeader at each turn: a replica that loses the Lease stops
// reaping and scaling down at its next turn, and the one that takes over
// starts at its own.
package leader

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Checker is what the loops need; declare it where used.
type Checker interface {
	IsLeader() bool
}

// always is the leader on one machine.
type always struct{}

func (always) IsLeader() bool { return true }

// Always is a Checker that is always leader (one Berth process).
var Always Checker = always{}

// Options configure Elect; Client, Namespace, Name and Identity are
// required, the durations default to client-go's usual 15 s / 10 s / 2 s.
type Options struct {
	// Client is the coordination.k8s.io/v1 client (a clientset's
	// CoordinationV1()).
	Client    coordinationv1.CoordinationV1Interface
	Namespace string
	// Name is the Lease's name (for example "berth-leader").
	Name string
	// Identity names this replica in the Lease (its Pod name).
	Identity string
	// LeaseDuration is how long the others wait after the leader's last
	// renewal before they take over; RenewDeadline how long the leader
	// keeps retrying a renewal before it steps down; RetryPeriod the time
	// between tries.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	Logger                                    *slog.Logger
	// OnChange, if set, is called (from the election's goroutine) when
	// this replica becomes leader (true) or stops being it (false).
	OnChange func(leading bool)
}

// Elector takes part in the election of a Lease until its context ends.
type Elector struct {
	o       Options
	leading atomic.Bool
	leader  atomic.Pointer[string] // the identity last seen holding the Lease
	done    chan struct{}
}

// IsLeader says whether this replica holds the Lease now.
func (e *Elector) IsLeader() bool { return e.leading.Load() }

// Leader is the identity that held the Lease when last observed ("" if
// none yet).
func (e *Elector) Leader() string {
	if p := e.leader.Load(); p != nil {
		return *p
	}
	return ""
}

// Done is closed when the election has ended (its context ended); a
// leader releases the Lease on the way out, so that another takes over at
// once.
func (e *Elector) Done() <-chan struct{} { return e.done }

// Elect starts taking part in the election; it runs until ctx ends.
func Elect(ctx context.Context, o Options) (*Elector, error) {
	if o.Client == nil || o.Namespace == "" || o.Name == "" || o.Identity == "" {
		return nil, errors.New("leader: Client, Namespace, Name and Identity are required")
	}
	if o.LeaseDuration == 0 {
		o.LeaseDuration = 15 * time.Second
	}
	if o.RenewDeadline == 0 {
		o.RenewDeadline = o.LeaseDuration * 2 / 3
	}
	if o.RetryPeriod == 0 {
		o.RetryPeriod = o.RenewDeadline / 5
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	e := &Elector{o: o, done: make(chan struct{})}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1ObjectMeta(o.Namespace, o.Name),
		Client:     o.Client,
		LockConfig: resourcelock.ResourceLockConfig{Identity: o.Identity},
	}
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   o.LeaseDuration,
		RenewDeadline:   o.RenewDeadline,
		RetryPeriod:     o.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            o.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(context.Context) { e.set(true) },
			OnStoppedLeading: func() { e.set(false) },
			OnNewLeader: func(id string) {
				e.leader.Store(&id)
				o.Logger.Info("leader elected", "lease", o.Name, "leader", id, "self", id == o.Identity)
			},
		},
	})
	if err != nil {
		return nil, err
	}
	go func() {
		defer close(e.done)
		// Run returns when the replica loses the Lease; it then stands
		// again until ctx ends.
		for ctx.Err() == nil {
			le.Run(ctx)
		}
	}()
	return e, nil
}

func (e *Elector) set(leading bool) {
	if e.leading.Swap(leading) != leading && e.o.OnChange != nil {
		e.o.OnChange(leading)
	}
}
