package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/berth-dev/berth/controlplane"
	"github.com/berth-dev/berth/pool"
)

const poolUsage = `Usage: berth pool COMMAND [flags]

Commands:
  create NAME [--type shell|python|custom] [--image REF] [--runtime bwrap|gvisor] [--ready N] [--max N]
              [--cooldown 300s] [--egress disabled|enabled|allow=HOST,…]
              [--egress-inject HOST:Header=secretref:NAME]… [--memory 512Mi] [--disk 1Gi]
              [--cpu 1] [--timeout 220s] [--mcp] [--mcp-auth key|none]
              [--auth key|oidc|key,oidc --oidc-issuer URL --oidc-audience AUD
               [--oidc-scopes S,…] [--oidc-allowed-clients C,…]]
              custom pools: --type custom --image REF --target-port 8080
               [--command "PROG ARG…"] [--args "ARG…"] [--env K=V]…
  update NAME [any create flag but --type, --runtime and the custom ones]
  list
  show NAME
  delete NAME
  credentials NAME     print the pool's API key
  rotate-key NAME      replace the key; the old one stops working at once
  sessions NAME        live sessions: age, idle time, memory, disk, processes
  end-session NAME ID  end a session now

Every command takes -o json, --data-dir, --server and --token.`

func runPool(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Println(poolUsage)
		return nil
	}
	sub, args := args[0], args[1:]
	if sub == "sessions" || sub == "end-session" {
		return runPoolSessions(ctx, sub, args)
	}
	fs := flag.NewFlagSet("pool "+sub, flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	var s poolSettings
	var cf2 corsFlags
	if sub == "create" || sub == "update" {
		s.register(fs, sub == "create")
		cf2.register(fs, sub == "update")
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	wantName := sub != "list"
	if wantName && len(pos) != 1 || !wantName && len(pos) != 0 {
		return usageError(fmt.Sprintf("pool %s takes %s\n\n%s", sub, map[bool]string{true: "one pool name", false: "no arguments"}[wantName], poolUsage))
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	var name string
	if wantName {
		name = pos[0]
	}
	switch sub {
	case "create":
		cfg, err := s.config(name)
		if err != nil {
			return err
		}
		if cfg.ImageDigest, err = pullFirst(ctx, c, cfg.Image); err != nil {
			return err
		}
		if cfg.CORS, err = cf2.spec(fs); err != nil {
			return err
		}
		var out struct {
			controlplane.PoolView
			APIKey string `json:"apiKey"`
		}
		if err := c.call(ctx, http.MethodPost, "/v1/pools", cfg, &out); err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(out)
		}
		printPool(out.PoolView)
		fmt.Printf("\nAPI key: %s\n(berth pool credentials %s prints it again)\n", out.APIKey, name)
		return nil
	case "update":
		patch, err := s.patch(fs)
		if err != nil {
			return err
		}
		if patch.Image != nil {
			d, err := pullFirst(ctx, c, *patch.Image)
			if err != nil {
				return err
			}
			patch.ImageDigest = &d
		}
		if patch.CORS, err = cf2.spec(fs); err != nil {
			return err
		}
		patch.ClearCORS = cf2.disable
		var out controlplane.PoolView
		if err := c.call(ctx, http.MethodPatch, "/v1/pools/"+name, patch, &out); err != nil {
			return err
		}
		return show(cf.output, out)
	case "list":
		var out struct {
			Value []controlplane.PoolView `json:"value"`
		}
		if err := c.call(ctx, http.MethodGet, "/v1/pools", nil, &out); err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(out.Value)
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tTYPE\tRUNTIME\tSESSIONS\tWARM\tREADY\tMAX\tEGRESS\tMCP")
		for _, p := range out.Value {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%v\n", p.Name, p.Type, p.Runtime,
				p.Status.Sessions, p.Status.Warm, p.Ready, p.Max, p.Egress, p.MCP)
		}
		return tw.Flush()
	case "show":
		var out controlplane.PoolView
		if err := c.call(ctx, http.MethodGet, "/v1/pools/"+name, nil, &out); err != nil {
			return err
		}
		return show(cf.output, out)
	case "delete":
		if err := c.call(ctx, http.MethodDelete, "/v1/pools/"+name, nil, nil); err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(map[string]any{"deleted": name})
		}
		fmt.Printf("pool %s deleted\n", name)
		return nil
	case "credentials", "rotate-key":
		var out struct {
			APIKey string `json:"apiKey"`
		}
		if err := c.call(ctx, http.MethodPost, "/v1/pools/"+name+"/"+sub, nil, &out); err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(out)
		}
		fmt.Println(out.APIKey)
		return nil
	}
	return usageError(fmt.Sprintf("unknown pool command %q\n\n%s", sub, poolUsage))
}

func show(output string, v controlplane.PoolView) error {
	if output == "json" {
		return printJSON(v)
	}
	printPool(v)
	return nil
}

func printPool(p controlplane.PoolView) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	rows := [][2]string{
		{"Name", p.Name}, {"Type", p.Type}, {"Runtime", p.Runtime},
		{"Ready sessions", strconv.Itoa(p.Ready)}, {"Max sessions", strconv.Itoa(p.Max)},
		{"Cooldown", (time.Duration(p.CooldownSeconds) * time.Second).String()},
		{"Egress", p.Egress}, {"Memory", p.Memory}, {"Disk", p.Disk}, {"CPU", strconv.FormatFloat(p.CPU, 'f', -1, 64)},
		{"Timeout", (time.Duration(p.TimeoutSeconds) * time.Second).String()},
		{"Sessions", fmt.Sprintf("%d live, %d warm", p.Status.Sessions, p.Status.Warm)},
		{"Execute", p.Endpoints.CodeExecute},
		{"Files", p.Endpoints.Files},
	}
	if len(p.EgressInject) > 0 {
		rows = slices.Insert(rows, 7, [2]string{"Egress inject", strings.Join(p.EgressInject, ", ")})
	}
	auth := p.Auth
	if p.OIDC != nil && p.Auth != pool.AuthKey {
		auth += " (issuer " + p.OIDC.Issuer + ", audience " + p.OIDC.Audience + ")"
	}
	rows = append(rows, [2]string{"Auth", auth})
	if p.Image != "" {
		rows = append(rows, [2]string{"Image", p.Image + " (" + p.ImageDigest + ")"})
	}
	if p.Container != nil {
		rows = append(rows, [2]string{"Target port", strconv.Itoa(p.Container.TargetPort)}, [2]string{"Requests", p.Endpoints.Pool + "/PATH?identifier=ID"})
	}
	if p.MCP {
		rows = append(rows, [2]string{"MCP", p.Endpoints.MCP + " (auth: " + p.MCPAuth + ")"})
		rows = append(rows, [2]string{"CORS", p.CORS.String()})
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s:\t%s\n", r[0], r[1])
	}
	tw.Flush()
}

// poolSettings are the flags of create and update.
type poolSettings struct {
	typ, runtime, egress, memory, disk, mcpAuth string
	ready, max                                  int
	cooldown, timeout                           time.Duration
	cpu                                         float64
	mcp                                         bool
	auth                                        authFlags
	image, command, args                        string
	targetPort                                  int
	env                                         multiFlag
	inject                                      multiFlag
}

func (s *poolSettings) register(fs *flag.FlagSet, create bool) {
	if create {
		fs.StringVar(&s.typ, "type", pool.TypeShell, "shell or python")
		fs.StringVar(&s.runtime, "runtime", "bwrap", "sandbox runtime: bwrap or gvisor")
		fs.IntVar(&s.targetPort, "target-port", 0, "custom pools: the port the container listens on")
		fs.StringVar(&s.command, "command", "", "custom pools: the container's command, replacing the image's entrypoint (split on spaces)")
		fs.StringVar(&s.args, "args", "", "custom pools: the command's arguments, replacing the image's cmd (split on spaces)")
		fs.Var(&s.env, "env", "custom pools: K=V environment variable of the container (repeatable)")
	}
	fs.StringVar(&s.image, "image", "", "image the sandboxes run on (pulled now; the pool keeps its digest); builtin:python and builtin:shell are Berth's own")
	fs.IntVar(&s.ready, "ready", pool.DefaultReady, "sandboxes kept warm")
	fs.IntVar(&s.max, "max", pool.DefaultMax, "maximum live sessions")
	fs.DurationVar(&s.cooldown, "cooldown", pool.DefaultCooldown*time.Second, "idle time after which a session is destroyed")
	fs.StringVar(&s.egress, "egress", "disabled", "network egress: disabled, enabled, or allow=HOST,*.DOMAIN,… (only those hosts, through Berth's egress proxy)")
	fs.Var(&s.inject, "egress-inject", "HOST:Header=secretref:NAME: the egress proxy adds this header to HTTPS requests to HOST (repeatable; needs an allow-list)")
	fs.StringVar(&s.memory, "memory", pool.FormatBytes(pool.DefaultMemory), "memory per session (e.g. 512Mi, 1Gi)")
	fs.StringVar(&s.disk, "disk", pool.FormatBytes(pool.DefaultDisk), "disk space per session: its /mnt/data and /tmp together (e.g. 1Gi); files are limited in proportion (one per 16Ki)")
	fs.Float64Var(&s.cpu, "cpu", pool.DefaultCPU, "CPU cores per session")
	fs.DurationVar(&s.timeout, "timeout", pool.DefaultTimeout*time.Second, "maximum time of one execution")
	fs.BoolVar(&s.mcp, "mcp", false, "enable the pool's MCP endpoint")
	fs.StringVar(&s.mcpAuth, "mcp-auth", pool.MCPAuthKey, "MCP endpoint authentication: key or none")
	s.auth.registerPool(fs)
}

func seconds(name string, d time.Duration) (int, error) {
	if d <= 0 || d%time.Second != 0 {
		return 0, usageError(fmt.Sprintf("--%s must be a positive whole number of seconds, like 300s or 5m", name))
	}
	return int(d / time.Second), nil
}

func (s *poolSettings) config(name string) (pool.Config, error) {
	mem, err := pool.ParseBytes(s.memory)
	if err != nil {
		return pool.Config{}, usageError("--memory: " + err.Error())
	}
	disk, err := pool.ParseBytes(s.disk)
	if err != nil {
		return pool.Config{}, usageError("--disk: " + err.Error())
	}
	cool, err := seconds("cooldown", s.cooldown)
	if err != nil {
		return pool.Config{}, err
	}
	to, err := seconds("timeout", s.timeout)
	if err != nil {
		return pool.Config{}, err
	}
	if o := s.auth.poolOIDC(); o != nil && !strings.Contains(s.auth.mode, pool.AuthOIDC) {
		return pool.Config{}, usageError("--oidc-* flags need --auth oidc or --auth key,oidc")
	}
	ctr, err := s.container()
	if err != nil {
		return pool.Config{}, err
	}
	return pool.Config{
		Image: s.image, Container: ctr,
		Name: name, Type: s.typ, Runtime: s.runtime, Ready: s.ready, Max: s.max,
		CooldownSeconds: cool, Egress: s.egress, EgressInject: s.inject, MemoryBytes: mem, DiskBytes: disk, CPU: s.cpu,
		TimeoutSeconds: to, MCP: s.mcp, MCPAuth: s.mcpAuth, Auth: s.auth.mode, OIDC: s.auth.poolOIDC(),
	}, nil
}

// patch sends only the flags given on the command line.
func (s *poolSettings) patch(fs *flag.FlagSet) (controlplane.Patch, error) {
	var p controlplane.Patch
	var err error
	fs.Visit(func(f *flag.Flag) {
		if err != nil {
			return
		}
		switch f.Name {
		case "ready":
			p.Ready = &s.ready
		case "max":
			p.Max = &s.max
		case "cooldown":
			var v int
			v, err = seconds("cooldown", s.cooldown)
			p.CooldownSeconds = &v
		case "timeout":
			var v int
			v, err = seconds("timeout", s.timeout)
			p.TimeoutSeconds = &v
		case "egress":
			p.Egress = &s.egress
			if !strings.HasPrefix(s.egress, "allow=") && p.EgressInject == nil {
				p.EgressInject = &[]string{} // inject rules go with an allow-list
			}
		case "egress-inject":
			v := []string(s.inject)
			p.EgressInject = &v
		case "memory":
			var v int64
			v, err = pool.ParseBytes(s.memory)
			p.MemoryBytes = &v
		case "disk":
			var v int64
			v, err = pool.ParseBytes(s.disk)
			p.DiskBytes = &v
		case "cpu":
			p.CPU = &s.cpu
		case "mcp":
			p.MCP = &s.mcp
		case "mcp-auth":
			p.MCPAuth = &s.mcpAuth
		case "auth":
			p.Auth = &s.auth.mode
		case "image":
			p.Image = &s.image
		}
	})
	p.OIDC = s.auth.poolOIDC()
	return p, err
}

// container is a custom pool's container, from the flags (nil if none).
func (s *poolSettings) container() (*pool.Container, error) {
	if s.targetPort == 0 && s.command == "" && s.args == "" && len(s.env) == 0 {
		return nil, nil
	}
	c := &pool.Container{TargetPort: s.targetPort, Command: strings.Fields(s.command), Args: strings.Fields(s.args)}
	for _, kv := range s.env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageError("--env takes K=V, not " + kv)
		}
		if c.Env == nil {
			c.Env = map[string]string{}
		}
		c.Env[k] = v
	}
	return c, nil
}

// pullFirst pulls a pool's image through the control API, with progress
// on stderr, and returns its digest; the server then finds it in its
// store. Built-in images ("builtin:…") are the server's to resolve.
func pullFirst(ctx context.Context, c *apiClient, ref string) (string, error) {
	if ref == "" || strings.HasPrefix(ref, pool.BuiltinPrefix) {
		return "", nil
	}
	im, err := pullStream(ctx, c, controlplane.PullRequest{Ref: ref}, newProgressView(os.Stderr, isTerminal(os.Stderr)), false)
	if err != nil {
		return "", fmt.Errorf("image %s: %w", ref, err)
	}
	return im.Digest, nil
}
