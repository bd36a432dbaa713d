// Package agentcmd is the command line of Berth's sandbox agent: the first
// process inside every sandbox. It is shared by the berth-agent binary
// (small and quick to start: what the drivers put in sandboxes) and the
// hidden "berth agent" subcommand, and imports nothing but the agent.
package agentcmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"time"

	"github.com/berth-dev/berth/agent"
)

// Run parses the agent's flags and serves until ctx is done. It prints
// "ready" on stdout once it accepts connections, which is how the runtime
// knows the sandbox is up. A bad flag is returned as is (the caller prints
// usage); flag.ErrHelp after -h.
func Run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "/.berth/run/agent.sock", "Unix socket to serve on")
	workspace := fs.String("workspace", "/mnt/data", "workspace directory")
	private := fs.String("private", "/tmp/.berth", "the agent's scratch directory")
	maxProcs := fs.Int("max-procs", 0, "RLIMIT_NPROC for the code the agent runs (0: unlimited)")
	listen := fs.String("listen", "", "serve TCP on this address instead of the socket (needs --token-file)")
	tokenFile := fs.String("token-file", "", "file holding the token every request must carry (read before dropping to --user)")
	user := fs.String("user", "", "UID:GID to drop to once the token is read, when started as root")
	install := fs.String("install", "", "instead of serving, copy this binary to this path (an init container's job) and exit")
	execNproc := fs.Int(agent.ExecNprocFlag, 0, "instead of serving, run the command after -- under this RLIMIT_NPROC")
	waitDenied := fs.String("wait-denied", "", "instead of serving, wait until a connection to HOST:PORT fails (\"kubernetes\": the API server's service address), at most --within: an init container's gate that holds a Pod back until its NetworkPolicy is in force")
	within := fs.Duration("within", 30*time.Second, "with --wait-denied: how long to wait")
	var own multi
	fs.Var(&own, "own", "a directory to give to --user before dropping to it (a named volume's top; repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *install != "" {
		return agent.InstallSelf(*install)
	}
	if *waitDenied != "" {
		return waitUntilDenied(ctx, *waitDenied, *within)
	}
	if *execNproc > 0 {
		return agent.ExecLimited(*execNproc, fs.Args())
	}
	opts := agent.Options{Workspace: *workspace, Private: *private, MaxProcs: *maxProcs}
	ln, err := listener(*socket, *listen, *tokenFile, &opts)
	if err != nil {
		return err
	}
	if *user != "" {
		var uid, gid int
		if _, err := fmt.Sscanf(*user, "%d:%d", &uid, &gid); err != nil {
			return fmt.Errorf("--user %q: want UID:GID", *user)
		}
		if err := agent.DropPrivileges(uid, gid, append([]string{opts.Workspace, opts.Private}, own...)...); err != nil {
			return fmt.Errorf("drop privileges: %w", err)
		}
	}
	if err := agent.Harden(); err != nil {
		return fmt.Errorf("harden the agent: %w", err)
	}
	// Idle sandboxes are many: keep the agent's heap small.
	debug.SetGCPercent(50)
	debug.SetMemoryLimit(16 << 20)
	return agent.Serve(ctx, ln, opts, func() {
		fmt.Fprintln(os.Stdout, "ready")
	})
}

// listener is the agent's Unix socket, or with listen its TCP listener,
// which requires the token read from tokenFile (into opts).
func listener(socket, listen, tokenFile string, opts *agent.Options) (net.Listener, error) {
	if listen == "" {
		return agent.Listen(socket)
	}
	if tokenFile == "" {
		return nil, errors.New("--listen needs --token-file: an agent on TCP must authenticate its callers")
	}
	tok, err := agent.ReadToken(tokenFile)
	if err != nil {
		return nil, err
	}
	opts.Token = tok
	return net.Listen("tcp", listen)
}

// waitUntilDenied returns once a TCP connection to addr fails: the
// network policy that refuses it is in force. A Pod's policy is applied
// some time after the Pod has its address (the enforcer learns it from the
// Pod's status), and nothing of the sandbox may run before.
func waitUntilDenied(ctx context.Context, addr string, within time.Duration) error {
	if addr == "kubernetes" {
		host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
		if host == "" || port == "" {
			return errors.New("--wait-denied kubernetes: no KUBERNETES_SERVICE_HOST/PORT in the environment")
		}
		addr = net.JoinHostPort(host, port)
	}
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	var d net.Dialer
	for {
		attempt, stop := context.WithTimeout(ctx, time.Second)
		c, err := d.DialContext(attempt, "tcp", addr)
		stop()
		if err != nil && ctx.Err() == nil {
			return nil
		}
		if c != nil {
			c.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s still answers after %v: the cluster does not enforce this Pod's NetworkPolicy (sandboxes without egress need a CNI that enforces NetworkPolicies)", addr, within)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// multi is a repeatable string flag.
type multi []string

func (m *multi) String() string     { return fmt.Sprint(*m) }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }
