package main

import (
	"flag"
	"os"
	"strings"

	"github.com/berth-dev/berth/dashboard"
	"github.com/berth-dev/berth/server"
)

// uiFlags are berth up's dashboard flags.
type uiFlags struct {
	issuer, clientID, secretFile, claim string
	subjects, emails                    []string
	public                              bool
}

// registerUIFlags adds berth up's dashboard flags to fs.
func registerUIFlags(fs *flag.FlagSet) *uiFlags {
	f := &uiFlags{}
	fs.StringVar(&f.issuer, "ui-oidc-issuer", "", "OpenID provider the dashboard offers sign-in with (https, or http on loopback); its redirect URI is DASHBOARD_URL/ui/oidc/callback")
	fs.StringVar(&f.clientID, "ui-oidc-client-id", "", "the dashboard's client ID at the provider (--ui-oidc-issuer)")
	fs.StringVar(&f.secretFile, "ui-oidc-client-secret-file", "", "file holding the client's secret (none: a public client, PKCE only)")
	fs.StringVar(&f.claim, "ui-oidc-required-claim", "", "NAME=VALUE: only users whose claim NAME is VALUE (or a list holding it) may sign in, e.g. groups=berth-admins")
	fs.Func("ui-oidc-allowed-subjects", "subjects (sub) who may sign in to the dashboard through OIDC; repeatable or comma-separated", listFlag(&f.subjects))
	fs.Func("ui-oidc-allowed-emails", "verified emails of the users who may sign in to the dashboard through OIDC; repeatable or comma-separated", listFlag(&f.emails))
	fs.BoolVar(&f.public, "ui-public", false, "also serve the dashboard on the HTTPS listener at the public URL's host, OIDC sign-in only (needs --https-listen and --ui-oidc-issuer)")
	return f
}

func listFlag(dst *[]string) func(string) error {
	return func(v string) error {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				*dst = append(*dst, s)
			}
		}
		return nil
	}
}

// options checks the flags and reads the client secret.
func (f *uiFlags) options() (server.DashboardOptions, error) {
	o := server.DashboardOptions{Public: f.public}
	if f.issuer == "" {
		if f.clientID != "" || f.secretFile != "" || f.claim != "" || len(f.subjects) > 0 || len(f.emails) > 0 || f.public {
			return o, usageError("the --ui-oidc-* flags and --ui-public need --ui-oidc-issuer")
		}
		return o, nil
	}
	o.OIDC = &dashboard.OIDC{Issuer: strings.TrimSpace(f.issuer), ClientID: f.clientID, AllowedSubjects: f.subjects, AllowedEmails: f.emails, RequiredClaim: f.claim}
	if f.secretFile != "" {
		b, err := os.ReadFile(f.secretFile)
		if err != nil {
			return o, usageError("--ui-oidc-client-secret-file: " + err.Error())
		}
		if o.OIDC.ClientSecret = strings.TrimSpace(string(b)); o.OIDC.ClientSecret == "" {
			return o, usageError("--ui-oidc-client-secret-file: " + f.secretFile + " is empty")
		}
	}
	if err := o.OIDC.Check(); err != nil {
		return o, usageError("--ui-oidc-*: " + err.Error())
	}
	return o, nil
}
