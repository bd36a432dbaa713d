package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/berth-dev/berth/app"
	"github.com/berth-dev/berth/controlplane"
	"github.com/berth-dev/berth/pool"
)

const appUsage = `Usage: berth app COMMAND [flags]

Commands:
  deploy NAME --command "CMD ARGS…" [--dir DIR] [--transport http|stdio] [--port 8080]
  deploy NAME --image REF [--command "ENTRYPOINT…"] [--args "ARGS…"]
              [--registry-server HOST --registry-username U --registry-password-stdin]
              [--path /mcp] [--env K=V]… [--volume NAME:/PATH]… [--min 0] [--max 10]
              [--concurrency 10] [--scale-down-after 300s] [--memory 512Mi] [--disk 1Gi] [--cpu 1]
              [--egress disabled|enabled|allow=HOST,…] [--egress-inject HOST:Header=secretref:NAME]…
              [--revision-suffix S] [--probe tcp|http:/PATH|none]
              [--ingress external|internal] [AUTH FLAGS] [--env KEY=secretref:SECRET]… [--secret-volume /mnt/secrets]
  auth NAME --auth none|apikey|oidc [AUTH FLAGS]   (the app's, for every revision, at once)
  key create NAME KEYNAME     (prints the key, this once)
  key list NAME
  key revoke NAME KEYNAME
  list
  show NAME
  revisions NAME
  traffic NAME [--set REV=PCT[,REV=PCT…]] [--label REV=LABEL]…
  logs NAME [-f]
  metrics [NAME]    requests, errors (since start, last hour), per-tool calls, p50/p99 per method
  delete NAME
  restart NAME                start its replicas anew (they read changed secrets)
  hostname add NAME HOST [--label L]   serve the app (or its label) at a custom domain
  hostname list NAME                   its custom domains and their certificates
  hostname delete NAME HOST

AUTH FLAGS: --auth none|apikey|oidc [--oidc-issuer URL --oidc-audience AUD]
  [--oidc-scopes S,…] [--oidc-allowed-clients C,…] [--auth-forward-token]

Every command takes -o json, --data-dir, --server and --token.`

// multiFlag collects a repeatable flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func runApp(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Println(appUsage)
		return nil
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "auth":
		return runAppAuth(ctx, args)
	case "key":
		return runAppKey(ctx, args)
	case "hostname":
		return runAppHostname(ctx, args)
	case "metrics":
		return runAppMetrics(ctx, args)
	case "restart":
		return runAppRestart(ctx, args)
	}
	fs := flag.NewFlagSet("app "+sub, flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	var d deployFlags
	var af authFlags
	var set string
	var labels multiFlag
	var follow bool
	switch sub {
	case "deploy":
		d.register(fs)
		af.register(fs)
		d.cors.register(fs, false)
	case "traffic":
		fs.StringVar(&set, "set", "", "traffic split: REV=PCT[,REV=PCT…] adding up to 100")
		fs.Var(&labels, "label", "REV=LABEL: serve REV at NAME---LABEL (repeatable; REV empty removes the label)")
	case "logs":
		fs.BoolVar(&follow, "f", false, "follow: keep printing new lines")
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if sub == "list" && len(pos) != 0 || sub != "list" && len(pos) != 1 {
		return usageError(fmt.Sprintf("app %s takes %s\n\n%s", sub, map[bool]string{true: "no arguments", false: "one app name"}[sub == "list"], appUsage))
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	var name string
	if len(pos) == 1 {
		name = pos[0]
	}
	switch sub {
	case "deploy":
		cfg, err := d.config()
		if err != nil {
			return err
		}
		if cfg.Auth, err = af.auth(); err != nil {
			return err
		}
		if cfg.CORS, err = d.cors.spec(fs); err != nil {
			return err
		}
		if d.dir != "" {
			src, err := uploadDir(ctx, c, d.dir)
			if err != nil {
				return err
			}
			if cfg.Source != nil {
				src.Image = cfg.Source.Image
			}
			cfg.Source = src
		}
		out, err := deployRevision(ctx, c, name, cfg, cf.output == "json")
		if err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(out)
		}
		fmt.Printf("revision %s created\n", out.Revision.Name)
		printApp(out.App)
		return nil
	case "list":
		var out struct {
			Value []controlplane.AppView `json:"value"`
		}
		if err := c.call(ctx, http.MethodGet, "/v1/apps", nil, &out); err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(out.Value)
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tREVISIONS\tREPLICAS\tTRAFFIC\tAUTH\tURL")
		for _, a := range out.Value {
			mode := app.AuthNone
			if a.Auth != nil {
				mode = a.Auth.Mode
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\n", a.Name, len(a.Revisions), len(a.Replicas), trafficString(a.Traffic), mode, a.URLs.Path)
		}
		return tw.Flush()
	case "show", "revisions":
		var out controlplane.AppView
		if err := c.call(ctx, http.MethodGet, "/v1/apps/"+name, nil, &out); err != nil {
			return err
		}
		if cf.output == "json" {
			if sub == "revisions" {
				return printJSON(out.Revisions)
			}
			return printJSON(out)
		}
		if sub == "revisions" {
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "REVISION\tCREATED\tTRAFFIC\tCOMMAND")
			for _, r := range out.Revisions {
				pct := 0
				for _, t := range out.Traffic {
					if t.Revision == r.Name {
						pct = t.Percent
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%d%%\t%s\n", r.Name, r.CreatedAt.Format(time.RFC3339), pct, revisionCommand(r.Config))
			}
			return tw.Flush()
		}
		printApp(out)
		return nil
	case "traffic":
		req := controlplane.TrafficRequest{}
		if set != "" {
			for _, kv := range strings.Split(set, ",") {
				rev, pct, ok := strings.Cut(kv, "=")
				n, err := strconv.Atoi(strings.TrimSuffix(pct, "%"))
				if !ok || err != nil {
					return usageError("--set takes REV=PCT[,REV=PCT…], like " + name + "--r1=80," + name + "--r2=20")
				}
				req.Traffic = append(req.Traffic, app.TrafficTarget{Revision: rev, Percent: n})
			}
		}
		for _, l := range labels {
			rev, label, ok := strings.Cut(l, "=")
			if !ok {
				return usageError("--label takes REV=LABEL")
			}
			if req.Labels == nil {
				req.Labels = map[string]string{}
			}
			req.Labels[label] = rev
		}
		if req.Traffic == nil && req.Labels == nil {
			return usageError("app traffic needs --set or --label")
		}
		var out controlplane.AppView
		if err := c.call(ctx, http.MethodPut, "/v1/apps/"+name+"/traffic", req, &out); err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(out)
		}
		printApp(out)
		return nil
	case "logs":
		return c.stream(ctx, http.MethodGet, "/v1/apps/"+name+"/logs?follow="+strconv.FormatBool(follow), nil, func(line []byte) error {
			if cf.output == "json" {
				_, err := fmt.Printf("%s\n", line)
				return err
			}
			var e app.LogEntry
			if err := json.Unmarshal(line, &e); err != nil {
				return err
			}
			who := e.Revision
			if e.Replica != "" {
				who = e.Replica
			}
			_, err := fmt.Printf("%s %s [%s] %s\n", e.Time.Local().Format("15:04:05.000"), who, e.Stream, e.Line)
			return err
		})
	case "delete":
		if err := c.call(ctx, http.MethodDelete, "/v1/apps/"+name, nil, nil); err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(map[string]any{"deleted": name})
		}
		fmt.Printf("app %s deleted\n", name)
		return nil
	}
	return usageError(fmt.Sprintf("unknown app command %q\n\n%s", sub, appUsage))
}

func trafficString(t []app.TrafficTarget) string {
	var parts []string
	for _, x := range t {
		parts = append(parts, fmt.Sprintf("%s=%d%%", x.Revision, x.Percent))
	}
	return strings.Join(parts, ",")
}

func printApp(a controlplane.AppView) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Name:\t%s\n", a.Name)
	fmt.Fprintf(tw, "URL:\t%s\n", a.URLs.Host)
	fmt.Fprintf(tw, "URL (by path):\t%s\n", a.URLs.Path)
	for label, u := range a.URLs.Labels {
		fmt.Fprintf(tw, "Label %s:\t%s (%s)\n", label, u, a.Labels[label])
	}
	for _, h := range a.URLs.Hostnames {
		fmt.Fprintf(tw, "Host %s:\t%s%s\n", h.Host, h.URL, hostNote(h))
	}
	if n := len(a.Revisions); n > 0 && a.Revisions[n-1].Config.HasImage() {
		fmt.Fprintf(tw, "Image:\t%s\n", a.Revisions[n-1].Config.Source.Image)
	}
	fmt.Fprintf(tw, "Traffic:\t%s\n", trafficString(a.Traffic))
	fmt.Fprintf(tw, "Auth:\t%s\n", authString(a.Auth, len(a.APIKeys)))
	fmt.Fprintf(tw, "CORS:\t%s\n", a.CORS.String())
	if a.Ingress == app.IngressInternal {
		fmt.Fprintf(tw, "Ingress:\tinternal (http://%s from other apps and sessions only)\n", a.Name)
	} else {
		fmt.Fprintf(tw, "Ingress:\texternal (also http://%s from other apps and sessions)\n", a.Name)
	}
	for _, r := range a.Replicas {
		fmt.Fprintf(tw, "Replica %s:\tready=%v inFlight=%d sessions=%d\n", r.ID, r.Ready, r.InFlight, r.Sessions)
	}
	tw.Flush()
}

// deployFlags are the flags of app deploy.
type deployFlags struct {
	image, args, regServer, regUser                                    string
	regPasswordStdin                                                   bool
	command, dir, transport, path, memory, disk, egress, suffix, probe string
	ingress                                                            string
	port, min, max, concurrency                                        int
	scaleDown                                                          time.Duration
	cpu                                                                float64
	env, volumes, inject                                               multiFlag
	secretVolume                                                       string
	cors                                                               corsFlags
}

func (d *deployFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.command, "command", "", "the command that starts the MCP server (run with /bin/sh -c in /app; with --image: the argv that replaces the image's Entrypoint)")
	fs.StringVar(&d.image, "image", "", "run this image (REPO:TAG or REPO@DIGEST; a tag is resolved to its digest now, and the revision keeps the digest)")
	fs.StringVar(&d.args, "args", "", "with --image: the arguments that replace the image's Cmd (split like a shell, no expansion)")
	fs.StringVar(&d.regServer, "registry-server", "", "the image's registry host, for the app's own login (with --registry-username)")
	fs.StringVar(&d.regUser, "registry-username", "", "the app's registry user")
	fs.BoolVar(&d.regPasswordStdin, "registry-password-stdin", false, "read the app's registry password from standard input")
	fs.StringVar(&d.dir, "dir", "", "local directory whose files the revision gets, read-only at /app (packed and uploaded; .berthignore lists what to leave out)")
	fs.StringVar(&d.transport, "transport", "http", "http (listens on $PORT) or stdio")
	fs.IntVar(&d.port, "port", 0, "the port the app listens on ($PORT; default 8080, or the image's first exposed port)")
	fs.StringVar(&d.path, "path", "/mcp", "the MCP endpoint's path")
	fs.Var(&d.env, "env", "K=V environment variable (repeatable)")
	fs.StringVar(&d.secretVolume, "secret-volume", "", "mount the app's secrets at PATH, one file each")
	fs.Var(&d.volumes, "volume", "NAME:/PATH persistent volume (repeatable)")
	fs.IntVar(&d.min, "min", 0, "minimum replicas (0 scales to zero)")
	fs.IntVar(&d.max, "max", 10, "maximum replicas")
	fs.IntVar(&d.concurrency, "concurrency", 10, "target concurrent requests per replica")
	fs.DurationVar(&d.scaleDown, "scale-down-after", 300*time.Second, "idle time before a replica is removed")
	fs.StringVar(&d.memory, "memory", "512Mi", "memory per replica")
	fs.StringVar(&d.disk, "disk", "1Gi", "disk space per replica (its /tmp; files limited in proportion)")
	fs.Float64Var(&d.cpu, "cpu", 1, "CPU cores per replica")
	fs.StringVar(&d.egress, "egress", "disabled", "network egress: disabled, enabled, or allow=HOST,*.DOMAIN,… (only those hosts, through Berth's egress proxy)")
	fs.Var(&d.inject, "egress-inject", "HOST:Header=secretref:NAME: the egress proxy adds this header to HTTPS requests to HOST (repeatable; needs an allow-list)")
	fs.StringVar(&d.suffix, "revision-suffix", "", "the new revision's name is NAME--SUFFIX")
	fs.StringVar(&d.probe, "probe", "", "readiness probe: tcp, http:/PATH or none (default tcp; none for stdio)")
	fs.StringVar(&d.ingress, "ingress", "", "external (the public listeners) or internal (other apps and sessions only); default: unchanged, external for a new app")
}

func (d *deployFlags) config() (app.Config, error) {
	mem, err := pool.ParseBytes(d.memory)
	if err != nil {
		return app.Config{}, usageError("--memory: " + err.Error())
	}
	disk, err := pool.ParseBytes(d.disk)
	if err != nil {
		return app.Config{}, usageError("--disk: " + err.Error())
	}
	sd, err := seconds("scale-down-after", d.scaleDown)
	if err != nil {
		return app.Config{}, err
	}
	cfg := app.Config{
		Command: d.command, Transport: d.transport, Port: d.port, Path: d.path,
		Min: d.min, Max: d.max, Concurrency: d.concurrency, ScaleDownAfterSeconds: sd,
		MemoryBytes: mem, DiskBytes: disk, CPU: d.cpu, Egress: d.egress, EgressInject: d.inject, RevisionSuffix: d.suffix,
		Ingress: d.ingress,
	}
	if err := d.imageConfig(&cfg); err != nil {
		return cfg, err
	}
	for _, kv := range d.env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return cfg, usageError("--env takes K=V, not " + kv)
		}
		if err := addEnv(&cfg, k, v); err != nil {
			return cfg, err
		}
	}
	cfg.SecretVolume = d.secretVolume
	for _, v := range d.volumes {
		n, p, ok := strings.Cut(v, ":")
		if !ok {
			return cfg, usageError("--volume takes NAME:/PATH, not " + v)
		}
		cfg.Volumes = append(cfg.Volumes, app.Volume{Name: n, Path: p})
	}
	switch {
	case d.probe == "":
	case d.probe == "tcp" || d.probe == "none":
		cfg.Probe.Type = d.probe
	case strings.HasPrefix(d.probe, "http:"):
		cfg.Probe = app.Probe{Type: "http", Path: strings.TrimPrefix(d.probe, "http:")}
	default:
		return cfg, usageError("--probe takes tcp, http:/PATH or none")
	}
	return cfg, nil
}
