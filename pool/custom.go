package pool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/sandbox"
)

// containerService is the agent service id of a custom pool's container.
const containerService = "container"

// containerReadyTimeout bounds the wait for a custom container's port.
const containerReadyTimeout = 2 * time.Minute

// startContainer runs a custom pool's container in sb and waits until it
// listens on its port. When the container exits, the sandbox is destroyed,
// so that its session ends (the reaper sees the sandbox gone).
func startContainer(ctx context.Context, sb sandbox.Sandbox, sh shape, im *image.Image, wg *sync.WaitGroup, log *slog.Logger) error {
	var c Container
	if err := json.Unmarshal([]byte(sh.Container), &c); err != nil || im == nil {
		return fmt.Errorf("custom pool without a container or an image")
	}
	argv, err := serviceArgv(&c, im.Config)
	if err != nil {
		return err
	}
	dir := im.Config.WorkingDir
	if dir == "" {
		dir = "/"
	}
	ag := sb.Agent()
	if err := ag.StartService(ctx, agent.ServiceSpec{ID: containerService, Argv: argv, Env: serviceEnv(&c, im.Config), Dir: dir}); err != nil {
		return fmt.Errorf("start %q: %w", strings.Join(argv, " "), err)
	}
	exited := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		e, err := ag.WaitService(context.Background(), containerService)
		if err == nil {
			err = fmt.Errorf("the container exited with code %d%s", e.ExitCode, map[bool]string{true: " (" + e.Signal + ")"}[e.Signal != ""])
			log.Info("custom container exited; its session ends", "sandbox", sb.ID(), "err", err)
			dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_ = sb.Destroy(dctx)
			cancel()
		}
		exited <- err
	}()
	if err := waitPort(ctx, sb, c.TargetPort, exited); err != nil {
		return fmt.Errorf("%w%s", err, lastLines(sb))
	}
	return nil
}

// waitPort waits until the container accepts connections on port.
func waitPort(ctx context.Context, sb sandbox.Sandbox, port int, exited <-chan error) error {
	deadline := time.Now().Add(containerReadyTimeout)
	wait := time.Millisecond
	for {
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		c, err := sb.Agent().DialPort(dctx, port)
		cancel()
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on port %d after %s: %v", port, containerReadyTimeout, err)
		}
		select {
		case e := <-exited:
			return fmt.Errorf("before listening on port %d: %w", port, e)
		case <-sb.Done():
			return errors.New("the sandbox stopped before the container listened")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 50*time.Millisecond)
	}
}

// lastLines is the end of what the container wrote, to say why it failed.
func lastLines(sb sandbox.Sandbox) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var lines []string
	_ = sb.Agent().ServiceLogs(ctx, containerService, false, func(l agent.LogLine) {
		lines = append(lines, l.Line)
		if len(lines) > 5 {
			lines = lines[1:]
		}
	})
	if len(lines) == 0 {
		return ""
	}
	out := strings.Join(lines, " | ")
	if len(out) > 1000 {
		out = out[len(out)-1000:]
	}
	return "; it wrote: " + out
}

// Transport reaches the port of a custom pool session's container,
// through the sandbox's agent (the sandbox needs no network interface).
// Nil for other pools.
func (s *Session) Transport() http.RoundTripper {
	if s.transport == nil {
		return nil
	}
	return s.transport
}

// newTransport is the transport of a custom session's container.
func newTransport(sb sandbox.Sandbox, port int) *http.Transport {
	return &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return sb.Agent().DialPort(ctx, port)
		},
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
}

// Begin marks the start of a request to the session (a proxied one): the
// session is not idle until the returned function runs.
func (s *Session) Begin() func() { return s.begin() }

// ProxyError turns a failed round trip to the session's container into
// ErrSessionLost when its sandbox is gone.
func (s *Session) ProxyError(err error) error {
	if s.lost() {
		return fmt.Errorf("%w: %q; its container stopped, a new request starts a new session", ErrSessionLost, s.ID)
	}
	return err
}
