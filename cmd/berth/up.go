package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/berth-dev/berth/edge/certs"
	"github.com/berth-dev/berth/internal/bodymem"
	"github.com/berth-dev/berth/internal/logbatch"
	"github.com/berth-dev/berth/pool"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/admit"
	"github.com/berth-dev/berth/sandbox/bwrap"
	"github.com/berth-dev/berth/sandbox/gvisor"
	"github.com/berth-dev/berth/server"
	"github.com/berth-dev/berth/source"
)

func runUp(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	dataDir := fs.String("data-dir", server.DefaultDataDir(), "state directory (database, keys, admin token) [$BERTH_DATA_DIR]")
	stateDir := fs.String("state-dir", server.DefaultStateDir, "sandbox state on this host (sandboxes' disks, app files and volumes, uploaded sources), in a directory per data dir")
	listen := fs.String("listen", "127.0.0.1:8080", "public listener (data plane)")
	admin := fs.String("admin-listen", "127.0.0.1:8081", "control API listener (token-protected)")
	publicURL := fs.String("public-url", "", "base URL clients use to reach the public listener (default http://LISTEN)")
	runsc := fs.String("runsc", "", "gVisor runsc binary for the gvisor runtime (default: runsc next to berth, in .bin, or on $PATH)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	appDomain := fs.String("app-domain", "localhost", "apps are served at NAME.DOMAIN by host name")
	appRuntime := fs.String("app-runtime", "bwrap", "sandbox runtime of app replicas: bwrap or gvisor")
	state := fs.String("state", server.StateSQLite, "where pools, apps, keys and secrets live: sqlite (in the data directory) or kube (custom resources and Secrets in the Kubernetes API, shared by replicas)")
	var kube server.KubeOptions
	fs.StringVar(&kube.Namespace, "kube-namespace", "", "with --state kube or --runtime kube: the namespace of Berth's resources and sandboxes (default: the kubeconfig's, or the Pod's)")
	fs.StringVar(&kube.Kubeconfig, "kubeconfig", "", "with --state kube or --runtime kube: kubeconfig file (default: $KUBECONFIG, else the Pod's service account)")
	var kf kubeFlags
	kf.register(fs)
	var ao admit.Options
	fs.Float64Var(&ao.MemoryOvercommit, "memory-overcommit", admit.DefaultMemoryOvercommit, "admit sandboxes whose memory limits add up to this many times the host's memory")
	fs.Float64Var(&ao.DiskOvercommit, "disk-overcommit", admit.DefaultDiskOvercommit, "admit sandboxes whose disks add up to this many times the free space of --state-dir")
	memCap := fs.String("memory-capacity", "", "the host's memory for admission (default: MemTotal, or Berth's cgroup limit if lower)")
	diskCap := fs.String("disk-capacity", "", "the disk space for sandboxes, for admission (default: free space of --state-dir at start)")
	maxConns := fs.Int("max-connections", 0, "open connections of the public listener (default: a quarter of the open-file limit, at most 16384)")
	maxConnsPerClient := fs.Int("max-connections-per-client", 512, "open connections of one client address to the public listener")
	idleTimeout := fs.Duration("idle-timeout", 2*time.Minute, "close keep-alive connections idle this long (both listeners)")
	bodyMemory := fs.String("body-memory", pool.FormatBytes(bodymem.DefaultBytes), "request bodies held in memory at once, server-wide (503 beyond)")
	maxUpload := fs.String("max-upload", pool.FormatBytes(source.DefaultMaxBytes), "largest app source archive (berth app deploy --dir) the control API takes, compressed (413 beyond)")
	httpsListen, tlsMode, tlsOpts := registerTLSFlags(fs)
	ui := registerUIFlags(fs)
	var manifests, egressCAs multiFlag
	egressDNS := fs.String("egress-dns", "", "DNS server (host:port) the egress proxy resolves sandboxes' destinations with (default: the host's resolver)")
	fs.Var(&egressCAs, "egress-upstream-ca", "PEM file of a root the egress proxy trusts, besides the system's, for hosts with --egress-inject rules (repeatable)")
	fs.Var(&manifests, "apply", "app manifest to apply once the server is up (repeatable), as berth apply -f does")
	var insecure multiFlag
	var builtinFlags multiFlag
	fs.Var(&builtinFlags, "builtin-image", "NAME=DIR: the OCI image layout in DIR is what pools name as image builtin:NAME (repeatable; scripts/images.sh builds python and shell)")
	fs.Var(&insecure, "insecure-registry", "registry host (HOST or HOST:PORT) reached over plain HTTP instead of HTTPS; repeatable")
	var origins []string
	fs.Func("allow-origin", "browser origin (scheme://host[:port]) allowed on MCP endpoints besides loopback; repeatable or comma-separated, * for any", func(v string) error {
		for _, o := range strings.Split(v, ",") {
			if o = strings.TrimSpace(o); o != "" {
				origins = append(origins, o)
			}
		}
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	if *state != server.StateSQLite && *state != server.StateKube {
		return usageError(fmt.Sprintf("--state: %q is not sqlite or kube", *state))
	}
	builtins, err := builtinLayouts(builtinFlags)
	if err != nil {
		return err
	}
	for _, c := range []struct {
		flag string
		v    *string
		dst  *int64
	}{{"memory-capacity", memCap, &ao.MemoryCapacity}, {"disk-capacity", diskCap, &ao.DiskCapacity}} {
		if *c.v == "" {
			continue
		}
		n, err := pool.ParseBytes(*c.v)
		if err != nil || n <= 0 {
			return usageError(fmt.Sprintf("--%s: %q is not a size (examples: 16Gi, 500Gi)", c.flag, *c.v))
		}
		*c.dst = n
	}
	if err := tlsFlags(fs, *httpsListen, *tlsMode, tlsOpts); err != nil {
		return err
	}
	uiOpts, err := ui.options()
	if err != nil {
		return err
	}
	if uiOpts.Public && *httpsListen == "" {
		return usageError("--ui-public needs --https-listen: the dashboard is served on the public listener only over HTTPS")
	}
	if kf.runtime != "local" && kf.runtime != "kube" {
		return usageError("--runtime: local or kube")
	}
	kf.namespace, kf.kubeconfig = kube.Namespace, kube.Kubeconfig
	if os.Geteuid() != 0 && kf.runtime == "local" {
		return errors.New("berth up needs root: every sandbox gets its own cgroup, host uid and namespaces (run it with sudo, or as root)")
	}
	bodyBytes, err := pool.ParseBytes(*bodyMemory)
	if err != nil || bodyBytes <= 0 {
		return usageError("--body-memory: a size such as 256Mi")
	}
	uploadBytes, err := pool.ParseBytes(*maxUpload)
	if err != nil || uploadBytes <= 0 {
		return usageError("--max-upload: a size such as 1Gi")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return usageError("--log-level: " + err.Error())
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)
	// Access lines (one per request) reach stderr in batches.
	batch := logbatch.New(os.Stderr, logbatch.Options{})
	defer batch.Close()
	access := slog.New(slog.NewTextHandler(batch, &slog.HandlerOptions{Level: level}))

	return server.Run(ctx, server.Options{
		DataDir: *dataDir, StateDir: *stateDir, Listen: *listen, AdminListen: *admin, PublicURL: *publicURL,
		Version: version, Logger: log, AccessLog: access, AllowedOrigins: origins, AppDomain: *appDomain, AppRuntime: *appRuntime,
		Admission:      ao,
		Egress:         server.EgressOptions{DNS: *egressDNS, UpstreamCAs: egressCAs},
		MaxConnections: *maxConns, MaxConnectionsPerClient: *maxConnsPerClient, IdleTimeout: *idleTimeout, BodyMemory: bodyBytes,
		MaxUploadBytes: uploadBytes, InsecureRegistries: insecure, BuiltinImages: builtins,
		HTTPSListen: *httpsListen, TLS: *tlsOpts, Dashboard: uiOpts,
		State: *state, Kube: kube,
		Runtimes: func(instance string) (map[string]sandbox.Runtime, error) {
			if kf.runtime == "kube" {
				return newKubeRuntimes(ctx, &kf, instance, log)
			}
			return newRuntimes(filepath.Join(*stateDir, instance), instance, *runsc, log)
		},
		Ready: func(s *server.Server) {
			printWelcome(s)
			for _, f := range manifests {
				args := []string{"-f", f, "--server", s.Info.AdminURL, "--data-dir", s.DataDir}
				if err := runApply(ctx, args); err != nil {
					log.Error("apply manifest", "file", f, "err", err)
				}
			}
		},
	})
}

// newRuntimes builds the sandbox drivers: bwrap is required, gvisor is
// offered when runsc is found. Each keeps its state in state/DRIVER; they
// share the apps' volumes, in state/volumes.
func newRuntimes(state, instance, runsc string, log *slog.Logger) (map[string]sandbox.Runtime, error) {
	bo := bwrap.Options{Logger: log}
	bo.Instance, bo.StateDir, bo.VolumeDir = instance, filepath.Join(state, "bwrap"), filepath.Join(state, "volumes")
	b, err := bwrap.New(bo)
	if err != nil {
		return nil, err
	}
	rts := map[string]sandbox.Runtime{"bwrap": b}
	if runsc == "" {
		runsc = findRunsc()
	}
	gopts := gvisor.Options{Runsc: runsc, Logger: log}
	gopts.Instance, gopts.StateDir, gopts.VolumeDir = instance, filepath.Join(state, "gvisor"), filepath.Join(state, "volumes")
	g, err := gvisor.New(gopts)
	switch {
	case err == nil:
		rts["gvisor"] = g
	case errors.Is(err, sandbox.ErrUnavailable):
		log.Warn("gvisor runtime unavailable; pools can use bwrap", "reason", err)
	default:
		return nil, err
	}
	return rts, nil
}

// findRunsc looks for runsc beside the berth binary and in the project's
// .bin (where `make` installs it), then leaves it to $PATH.
func findRunsc() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	for _, p := range []string{filepath.Join(filepath.Dir(exe), "runsc"), filepath.Join(".bin", "runsc")} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			abs, _ := filepath.Abs(p)
			return abs
		}
	}
	return ""
}

func printWelcome(s *server.Server) {
	fmt.Printf("\nBerth %s is up.\n\n", version)
	fmt.Printf("  Data plane   %s\n", s.Info.PublicURL)
	if s.Info.PlainURL != "" {
		fmt.Printf("  Plain HTTP   %s  (redirects to HTTPS; trust the root: berth ca trust --data-dir %s)\n", s.Info.PlainURL, s.DataDir)
	}
	fmt.Printf("  Control API  %s  (token in %s)\n\n", s.Info.AdminURL, filepath.Join(s.DataDir, server.TokenFile))
	for _, p := range s.Pools.List() {
		c := p.Config()
		base := s.Info.PublicURL + "/pools/" + c.Name
		fmt.Printf("  Pool %-10s %s, %s runtime\n", c.Name, c.Type, c.Runtime)
		fmt.Printf("    execute    POST %s/code/execute?identifier=ID\n", base)
		if c.MCP {
			fmt.Printf("    MCP        %s/mcp\n", base)
		}
	}
	fmt.Printf("\n  API key:     berth pool credentials default --data-dir %s\n", s.DataDir)
	fmt.Printf("  Try it:      curl -s -X POST '%s/pools/default/code/execute?identifier=demo-1' \\\n", s.Info.PublicURL)
	fmt.Printf("                 -H \"x-ms-apikey: $(berth pool credentials default --data-dir %s)\" \\\n", s.DataDir)
	fmt.Printf("                 -H 'content-type: application/json' -d '{\"properties\":{\"code\":\"echo hello from $(hostname)\"}}'\n\n")
}

// registerTLSFlags adds berth up's HTTPS flags to fs.
func registerTLSFlags(fs *flag.FlagSet) (httpsListen, mode *string, o *server.TLSOptions) {
	httpsListen = fs.String("https-listen", "", "HTTPS listener of the front door (e.g. 127.0.0.1:8443); --listen then redirects app and pool requests to it")
	mode = fs.String("tls", "internal", "where HTTPS certificates come from: internal (Berth's local CA) or acme; --tls-cert/--tls-key alone: files")
	o = &server.TLSOptions{}
	fs.StringVar(&o.ACMEEmail, "acme-email", "", "ACME account email (--tls acme)")
	fs.StringVar(&o.ACMECA, "acme-ca", "", "ACME directory URL (default Let's Encrypt)")
	fs.StringVar(&o.ACMECARoot, "acme-ca-root", "", "PEM file of roots trusted for the ACME server's own HTTPS")
	fs.StringVar(&o.CertFile, "tls-cert", "", "PEM certificate chain to serve (e.g. a wildcard for the app domain); with --tls-key")
	fs.StringVar(&o.KeyFile, "tls-key", "", "PEM private key of --tls-cert")
	return httpsListen, mode, o
}

// tlsFlags checks the HTTPS flags and sets o.Mode.
func tlsFlags(fs *flag.FlagSet, httpsListen, mode string, o *server.TLSOptions) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if httpsListen == "" {
		for _, f := range []string{"tls", "acme-email", "acme-ca", "acme-ca-root", "tls-cert", "tls-key"} {
			if set[f] {
				return usageError("--" + f + " needs --https-listen")
			}
		}
		return nil
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return usageError("--tls-cert and --tls-key go together")
	}
	switch {
	case mode == "internal" && o.CertFile != "" && !set["tls"]:
		o.Mode = certs.ModeFiles
	case mode == "internal", mode == "acme":
		o.Mode = certs.Mode(mode)
	default:
		return usageError("--tls: internal or acme (or --tls-cert/--tls-key)")
	}
	if o.Mode == certs.ModeACME && o.ACMEEmail == "" {
		return usageError("--tls acme needs --acme-email (the ACME account's contact)")
	}
	if o.Mode != certs.ModeACME && (o.ACMEEmail != "" || o.ACMECA != "" || o.ACMECARoot != "") {
		return usageError("--acme-email, --acme-ca and --acme-ca-root need --tls acme")
	}
	return nil
}

// builtinLayouts reads --builtin-image NAME=DIR flags. A DIR that holds
// no image layout (scripts/images.sh has not built it) is left out with a
// warning: pools that name it are refused, the default pool runs on the
// host's /usr.
func builtinLayouts(flags []string) (map[string]string, error) {
	out := map[string]string{}
	for _, f := range flags {
		name, dir, ok := strings.Cut(f, "=")
		if !ok || name == "" || dir == "" {
			return nil, usageError("--builtin-image takes NAME=DIR (an OCI image layout), not " + f)
		}
		abs, err := filepath.Abs(dir)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(filepath.Join(abs, "index.json")); err != nil {
			fmt.Fprintf(os.Stderr, "berth up: built-in image %s: no OCI image layout in %s (scripts/images.sh builds it); pools cannot use builtin:%s\n", name, abs, name)
			continue
		}
		out[name] = abs
	}
	return out, nil
}
