package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/berth-dev/berth/app"
	"github.com/berth-dev/berth/controlplane"
	"github.com/berth-dev/berth/pool"
)

// authFlags are the authentication flags of app deploy and app auth.
type authFlags struct {
	mode                   string
	issuer, audience       string
	scopes, allowedClients string
	forwardToken           bool
}

func (f *authFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.mode, "auth", "", "authentication: none, apikey or oidc (deploy: unchanged if not given; new apps: none)")
	fs.StringVar(&f.issuer, "oidc-issuer", "", "oidc: the issuer URL, exactly as in the tokens' iss (https, or http on loopback)")
	fs.StringVar(&f.audience, "oidc-audience", "", "oidc: the audience the tokens' aud must hold (the app's URL, say)")
	fs.StringVar(&f.scopes, "oidc-scopes", "", "oidc: scopes every token must carry, comma-separated")
	fs.StringVar(&f.allowedClients, "oidc-allowed-clients", "", "oidc: the only client ids whose tokens are accepted, comma-separated")
	fs.BoolVar(&f.forwardToken, "auth-forward-token", false, "pass the caller's Authorization / x-api-key header on to the app")
}

// registerPool registers the flags of pool create|update.
func (f *authFlags) registerPool(fs *flag.FlagSet) {
	fs.StringVar(&f.mode, "auth", "", "what the data plane and the MCP endpoint accept: key (default), oidc or key,oidc")
	fs.StringVar(&f.issuer, "oidc-issuer", "", "oidc: the issuer URL, exactly as in the tokens' iss (https, or http on loopback)")
	fs.StringVar(&f.audience, "oidc-audience", "", "oidc: the audience the tokens' aud must hold")
	fs.StringVar(&f.scopes, "oidc-scopes", "", "oidc: scopes every token must carry, comma-separated")
	fs.StringVar(&f.allowedClients, "oidc-allowed-clients", "", "oidc: the only client ids whose tokens are accepted, comma-separated")
}

// poolOIDC is the pool's OIDC settings if any --oidc-* flag was given.
func (f *authFlags) poolOIDC() *pool.OIDC {
	if f.issuer == "" && f.audience == "" && f.scopes == "" && f.allowedClients == "" {
		return nil
	}
	return &pool.OIDC{Issuer: f.issuer, Audience: f.audience, Scopes: splitList(f.scopes), AllowedClients: splitList(f.allowedClients)}
}

// auth returns the Auth the flags ask for, or nil if --auth was not given.
func (f *authFlags) auth() (*app.Auth, error) {
	if f.mode == "" {
		if f.issuer != "" || f.audience != "" || f.scopes != "" || f.allowedClients != "" || f.forwardToken {
			return nil, usageError("--oidc-* and --auth-forward-token need --auth")
		}
		return nil, nil
	}
	return &app.Auth{Mode: f.mode, Issuer: f.issuer, Audience: f.audience,
		Scopes: splitList(f.scopes), AllowedClients: splitList(f.allowedClients), ForwardToken: f.forwardToken}, nil
}

// authString describes an app's authentication for app show (never keys).
func authString(a *app.Auth, keys int) string {
	if a == nil || a.Mode == "" || a.Mode == app.AuthNone {
		return "none"
	}
	var s string
	switch a.Mode {
	case app.AuthAPIKey:
		s = fmt.Sprintf("apikey (%d keys)", keys)
	case app.AuthOIDC:
		s = fmt.Sprintf("oidc issuer=%s audience=%s", a.Issuer, a.Audience)
		if len(a.Scopes) > 0 {
			s += " scopes=" + strings.Join(a.Scopes, ",")
		}
		if len(a.AllowedClients) > 0 {
			s += " clients=" + strings.Join(a.AllowedClients, ",")
		}
	default:
		s = a.Mode
	}
	if a.ForwardToken {
		s += " (token forwarded)"
	}
	return s
}

// runAppAuth is berth app auth NAME --auth MODE [--oidc-…]: it changes an
// app's authentication without a new revision.
func runAppAuth(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("app auth", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	var af authFlags
	af.register(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError("app auth takes one app name\n\n" + appUsage)
	}
	a, err := af.auth()
	if err != nil {
		return err
	}
	if a == nil {
		return usageError("app auth needs --auth none|apikey|oidc")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	var out controlplane.AppView
	if err := c.call(ctx, http.MethodPut, "/v1/apps/"+pos[0]+"/auth", a, &out); err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(out)
	}
	printApp(out)
	return nil
}

// runAppKey is berth app key create|list|revoke NAME [KEYNAME].
func runAppKey(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError("app key takes create, list or revoke\n\n" + appUsage)
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("app key "+sub, flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	want := map[string]int{"create": 2, "list": 1, "revoke": 2}
	n, ok := want[sub]
	if !ok {
		return usageError(fmt.Sprintf("unknown app key command %q\n\n%s", sub, appUsage))
	}
	if len(pos) != n {
		return usageError(fmt.Sprintf("app key %s takes %s", sub, map[int]string{1: "an app name", 2: "an app name and a key name"}[n]))
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	base := "/v1/apps/" + pos[0] + "/keys"
	switch sub {
	case "create":
		var out controlplane.AppKeyCreated
		if err := c.call(ctx, http.MethodPost, base, map[string]string{"name": pos[1]}, &out); err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(out)
		}
		fmt.Printf("key %s of app %s (shown this once; send it as x-api-key: KEY or Authorization: Bearer KEY):\n%s\n", out.Name, pos[0], out.Key)
		return nil
	case "list":
		var out struct {
			Value []controlplane.AppKeyView `json:"value"`
		}
		if err := c.call(ctx, http.MethodGet, base, nil, &out); err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(out.Value)
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KEY\tCREATED")
		for _, k := range out.Value {
			fmt.Fprintf(tw, "%s\t%s\n", k.Name, k.CreatedAt.Format(time.RFC3339))
		}
		return tw.Flush()
	default:
		if err := c.call(ctx, http.MethodDelete, base+"/"+pos[1], nil, nil); err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(map[string]any{"revoked": pos[1]})
		}
		fmt.Printf("key %s of app %s revoked\n", pos[1], pos[0])
		return nil
	}
}
