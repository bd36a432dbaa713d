package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/berth-dev/berth/app"
	"github.com/berth-dev/berth/controlplane"
	"github.com/berth-dev/berth/store"
)

const secretUsage = `Usage: berth secret COMMAND [flags]

Commands:
  set APP NAME [--file FILE]   the value from FILE, or from stdin (one trailing newline dropped)
  list APP                     names and dates, never values
  delete APP NAME
  set|list|delete --pool POOL [NAME]   a session pool's secrets instead

An app uses its secrets as environment variables (berth app deploy --env KEY=secretref:NAME,
or secretRef in berth apply) and as files (--secret-volume /mnt/secrets: one file per secret).
A change takes effect on the next revision, or on the running ones after: berth app restart APP.

Egress inject rules (--egress-inject HOST:Header=secretref:NAME, on pools and apps) name a secret of
their pool or app; the egress proxy reads it at each request, so a change takes effect at once.

Every command takes -o json, --data-dir, --server and --token.`

func runSecret(ctx context.Context, args []string) error {
	var file, poolName string
	g, err := parseGroup("secret", secretUsage, args, map[string]int{"set": -1, "list": -1, "delete": -1}, func(sub string, fs *flag.FlagSet) {
		fs.StringVar(&poolName, "pool", "", "the secrets of session pool POOL instead of an app's")
		if sub == "set" {
			fs.StringVar(&file, "file", "", "read the value from FILE (exactly; default: stdin)")
		}
	})
	if g == nil || err != nil {
		return err
	}
	c, pos := g.c, g.pos
	want := map[string]int{"set": 2, "list": 1, "delete": 2}[g.sub]
	owner, base := "app", "/v1/apps/"
	if poolName != "" {
		owner, base = "pool", "/v1/pools/"
		pos = append([]string{poolName}, pos...)
	}
	if len(pos) != want {
		if poolName != "" {
			return usageError(fmt.Sprintf("secret %s --pool POOL takes %d arguments\n\n%s", g.sub, want-1, secretUsage))
		}
		return usageError(fmt.Sprintf("secret %s takes %d arguments\n\n%s", g.sub, want, secretUsage))
	}
	base += url.PathEscape(pos[0]) + "/secrets"
	switch g.sub {
	case "set":
		value, err := secretValue(file)
		if err != nil {
			return err
		}
		var out controlplane.SecretView
		if err := c.call(ctx, http.MethodPut, base+"/"+url.PathEscape(pos[1]), controlplane.SecretRequest{Value: value}, &out); err != nil {
			return err
		}
		if g.json {
			return printJSON(out)
		}
		fmt.Printf("secret %s of %s %s set: %s\n", pos[1], owner, pos[0], out.Note)
	case "list":
		var out struct {
			Value []store.SecretInfo `json:"value"`
		}
		if err := c.call(ctx, http.MethodGet, base, nil, &out); err != nil {
			return err
		}
		if g.json {
			return printJSON(out)
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tUPDATED")
		for _, s := range out.Value {
			fmt.Fprintf(tw, "%s\t%s\n", s.Name, s.UpdatedAt.Local().Format(time.DateTime))
		}
		return tw.Flush()
	case "delete":
		var out controlplane.SecretView
		if err := c.call(ctx, http.MethodDelete, base+"/"+url.PathEscape(pos[1]), nil, &out); err != nil {
			return err
		}
		if g.json {
			return printJSON(out)
		}
		fmt.Printf("secret %s of %s %s deleted: %s\n", pos[1], owner, pos[0], out.Note)
	}
	return nil
}

// secretValue reads a secret's value: a file as it is, or stdin without
// its last newline.
func secretValue(file string) ([]byte, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("--file: %w", err)
		}
		return b, nil
	}
	b, err := io.ReadAll(io.LimitReader(os.Stdin, app.MaxSecretBytes+2))
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r")), nil
}

// runAppRestart restarts an app's replicas (app restart NAME).
func runAppRestart(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("app restart", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError("app restart takes one app name\n\n" + appUsage)
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	var out controlplane.AppView
	if err := c.call(ctx, http.MethodPost, "/v1/apps/"+url.PathEscape(pos[0])+"/restart", nil, &out); err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(out)
	}
	fmt.Printf("app %s restarted: its replicas start anew, with its secrets as they are now\n", pos[0])
	return nil
}

// addEnv adds --env K=V to cfg; a value secretref:NAME references the
// app's secret NAME.
func addEnv(cfg *app.Config, k, v string) error {
	if s, ok := strings.CutPrefix(v, "secretref:"); ok {
		if s == "" {
			return usageError("--env " + k + "=secretref: needs a secret name")
		}
		if cfg.SecretEnv == nil {
			cfg.SecretEnv = map[string]string{}
		}
		cfg.SecretEnv[k] = s
		return nil
	}
	if cfg.Env == nil {
		cfg.Env = map[string]string{}
	}
	cfg.Env[k] = v
	return nil
}
