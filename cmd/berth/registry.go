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
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Println(registryUsage)
		return nil
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("registry "+sub, flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	var user string
	var stdin bool
	if sub == "login" {
		fs.StringVar(&user, "u", "", "user name")
		fs.StringVar(&user, "username", "", "user name")
		fs.BoolVar(&stdin, "password-stdin", false, "read the password from standard input")
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	want := map[string]int{"login": 1, "logout": 1, "list": 0}
	n, ok := want[sub]
	if !ok {
		return usageError(fmt.Sprintf("unknown registry command %q\n\n%s", sub, registryUsage))
	}
	if len(pos) != n {
		return usageError(fmt.Sprintf("registry %s takes %d argument(s)\n\n%s", sub, n, registryUsage))
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	switch sub {
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
		if cf.output == "json" {
			return printJSON(out)
		}
		fmt.Printf("login for %s stored (user %s)\n", out.Host, out.Username)
		return nil
	case "logout":
		if err := c.call(ctx, http.MethodDelete, "/v1/registries/"+url.PathEscape(pos[0]), nil, nil); err != nil {
			return err
		}
		if cf.output == "json" {
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
		if cf.output == "json" {
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
