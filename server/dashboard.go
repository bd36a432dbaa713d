package server

import (
	"errors"
	"net"
	"net/http"
	"strings"

	"github.com/berth-dev/berth/dashboard"
)

// DashboardOptions configure the dashboard's sign-in and where it is served.
type DashboardOptions struct {
	// OIDC, if set, offers sign-in through an OpenID provider besides the
	// admin token.
	OIDC *dashboard.OIDC
	// Public also serves the dashboard on the HTTPS listener, at the
	// public URL's host, with OIDC sign-in only (needs OIDC and
	// HTTPSListen).
	Public bool
}

func (o DashboardOptions) check(httpsListen string) error {
	if o.OIDC != nil {
		if err := o.OIDC.Check(); err != nil {
			return err
		}
	}
	if o.Public && (o.OIDC == nil || httpsListen == "") {
		return errors.New("the dashboard is served on the public listener only over HTTPS and behind OIDC: --ui-public needs --https-listen and --ui-oidc-issuer")
	}
	return nil
}

// dashboardOn serves the dashboard for requests to host (the public URL's)
// under /ui, and everything else (apps, pools, other hosts) with next.
func dashboardOn(host string, ui, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Host
		if hh, _, err := net.SplitHostPort(h); err == nil {
			h = hh
		}
		if strings.EqualFold(strings.TrimSuffix(h, "."), host) && (r.URL.Path == "/ui" || strings.HasPrefix(r.URL.Path, dashboard.Prefix)) {
			if r.URL.Path == "/ui" {
				http.Redirect(w, r, dashboard.Prefix, http.StatusMovedPermanently)
				return
			}
			ui.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}
