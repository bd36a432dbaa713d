package kube

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/agent"
)

// box is one sandbox: a Pod, its Secret and its NetworkPolicy.
type box struct {
	id, name string
	rt       *Runtime
	token    string
	client   *agent.Client

	mu  sync.Mutex
	ip  string // set before running is closed
	why string
	// unsched is the scheduler's latest "cannot place" message ("" once
	// the Pod has a node); unschedTimer gives up on it (capacity.go).
	unsched      string
	unschedTimer *time.Timer
	noCapacity   bool
	running      chan struct{} // closed once the Pod runs (ip set)
	done         chan struct{} // closed once the Pod stopped or went
	runOnce      sync.Once
	endOnce      sync.Once
	delOnce      sync.Once
	delErr       error
}

func (b *box) ID() string            { return b.id }
func (b *box) Agent() *agent.Client  { return b.client }
func (b *box) Done() <-chan struct{} { return b.done }

func (b *box) started(ip string) {
	b.runOnce.Do(func() {
		b.mu.Lock()
		b.ip = ip
		b.mu.Unlock()
		close(b.running)
	})
}

func (b *box) stopped(why string) {
	b.endOnce.Do(func() {
		b.mu.Lock()
		b.why = why
		c := b.client
		if b.unschedTimer != nil {
			b.unschedTimer.Stop()
		}
		b.mu.Unlock()
		close(b.done)
		if c != nil {
			c.Close() // its idle connections; new ones are refused (dialer)
		}
	})
}

// dialer connects to the agent at addr while the sandbox lives: a Pod
// deleted from the API may run on for its grace period, but is no
// sandbox any more.
func (b *box) dialer(addr string) func(ctx context.Context) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return func(ctx context.Context) (net.Conn, error) {
		select {
		case <-b.done:
			return nil, fmt.Errorf("sandbox %s stopped: %s", b.id, b.reason())
		default:
		}
		return d.DialContext(ctx, "tcp", addr)
	}
}

func (b *box) reason() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.why == "" {
		return "its Pod is not running yet"
	}
	return b.why
}

// waitAgent waits until the agent answers: it listens a moment after its
// container starts.
func (b *box) waitAgent(ctx context.Context) error {
	for delay := 10 * time.Millisecond; ; delay = min(delay*2, 200*time.Millisecond) {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := b.client.Ping(pctx)
		cancel()
		if err == nil {
			return nil
		}
		if ae := (*agent.Error)(nil); errors.As(err, &ae) {
			return fmt.Errorf("kube: the agent of sandbox %s refused: %w", b.id, err) // it answers, but not us
		}
		select {
		case <-b.done:
			return fmt.Errorf("kube: sandbox %s: %s", b.id, b.reason())
		case <-ctx.Done():
			return fmt.Errorf("kube: the agent of sandbox %s did not answer: %v (%w)", b.id, err, ctx.Err())
		case <-time.After(delay):
		}
	}
}

// Destroy implements sandbox.Sandbox: it deletes the Pod, its Secret and
// its NetworkPolicy, and waits (within ctx) until the Pod is gone.
func (b *box) Destroy(ctx context.Context) error {
	b.delOnce.Do(func() {
		r := b.rt
		b.mu.Lock()
		c := b.client
		b.mu.Unlock()
		if c != nil {
			c.Close()
		}
		ns := r.o.Namespace
		err := r.deletePod(ctx, b.name)
		err = errors.Join(err,
			ignoreNotFound(r.cs.CoreV1().Secrets(ns).Delete(ctx, b.name+"-agent", metav1.DeleteOptions{})),
			ignoreNotFound(r.cs.NetworkingV1().NetworkPolicies(ns).Delete(ctx, b.name, metav1.DeleteOptions{})))
		if err == nil {
			err = b.waitGone(ctx)
		}
		r.mu.Lock()
		delete(r.boxes, b.name)
		r.mu.Unlock()
		b.stopped("destroyed")
		b.delErr = err
	})
	return b.delErr
}

// waitGone waits until the watch no longer has the Pod.
func (b *box) waitGone(ctx context.Context) error {
	key := b.rt.o.Namespace + "/" + b.name
	for {
		if _, exists, _ := b.rt.informer.GetStore().GetByKey(key); !exists {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube: Pod %s still terminating: %w", b.name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
