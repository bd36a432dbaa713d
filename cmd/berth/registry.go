package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/berth-dev/berth/controlplane"
	"github.com/berth-dev/berth/store"
)

const registryUsage = `Usage: berth registry COMMAND [flags]

Commands:
  login HOST -u USER --password-stdin   store a login for a registry (sealed under the server's master key)
  logout HOST                           forget it
  list                                  registries with a stored login (never their passwords)

HOST is as image references name the registry: registry.example.com or host:5000.`

// runRegistry runs berth registry login|logout|list.
func runRegistry(ctx context.Context, args []string) error {
	var user string
	var stdin bool
	g, err := parseGroup("registry", registryUsage, args, map[string]int{"login": 1, "logout": 1, "list": 0}, func(sub string, fs *flag.FlagSet) {
		if sub == "login" {
			fs.StringVar(&user, "u", "", "user name")
			fs.StringVar(&user, "username", "", "user name")
			fs.BoolVar(&stdin, "password-stdin", false, "read the password from standard input")
		}
	})
	if g == nil || err != nil {
		return err
	}
	c, pos := g.c, g.pos
	switch g.sub {
	case "login":
		if user == "" || !stdin {
			return usageError("registry login needs -u USER and --password-stdin (the password is read from standard input, never from the command line)")
		}
		b, err := io.ReadAll(io.LimitReader(os.Stdin, 16<<10))
		if err != nil {
			return err
		}
		pw := strings.TrimRight(string(b), "\r\n")
		if pw == "" {
			return usageError("registry login: standard input held no password")
		}
		var out store.Registry
		if err := c.call(ctx, http.MethodPut, "/v1/registries/"+url.PathEscape(pos[0]), controlplane.LoginRequest{Username: user, Password: pw}, &out); err != nil {
			return err
		}
		if g.json {
			return printJSON(out)
		}
		fmt.Printf("login for %s stored (user %s)\n", out.Host, out.Username)
		return nil
	case "logout":
		if err := c.call(ctx, http.MethodDelete, "/v1/registries/"+url.PathEscape(pos[0]), nil, nil); err != nil {
			return err
		}
		if g.json {
			return printJSON(map[string]any{"removed": pos[0]})
		}
		fmt.Printf("login for %s removed\n", pos[0])
		return nil
	default:
		var out struct {
			Value []store.Registry `json:"value"`
		}
		if err := c.call(ctx, http.MethodGet, "/v1/registries", nil, &out); err != nil {
			return err
		}
		if g.json {
			return printJSON(out.Value)
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "REGISTRY\tUSER\tUPDATED")
		for _, r := range out.Value {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Host, r.Username, r.UpdatedAt.Format("2006-01-02 15:04"))
		}
		return tw.Flush()
	}
}
