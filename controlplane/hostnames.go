package controlplane

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/berth-dev/berth/app"
	"github.com/berth-dev/berth/internal/httpapi"
)

// Names is told under which names each app is served, so that the HTTPS
// front door binds (and unbinds) their certificates.
type Names interface {
	// AppChanged binds the names of an app after it was deployed or its
	// labels or custom domains changed (and unbinds those it lost).
	AppChanged(ctx context.Context, d app.Doc)
	// AppDeleted unbinds the names of a deleted app.
	AppDeleted(name string)
	// Status says where a name's certificate stands (certs.Manager.Status).
	Status(name string) string
}

func (c *ctl) hostnameRoutes(handle func(string, httpapi.HandlerFunc)) {
	handle("GET /v1/apps/{name}/hostnames", c.listHostnames)
	handle("PUT /v1/apps/{name}/hostnames/{host}", c.addHostname)
	handle("DELETE /v1/apps/{name}/hostnames/{host}", c.deleteHostname)
}

// HostnameView is a custom domain as the API shows it.
type HostnameView struct {
	app.Hostname
	URL string `json:"url"`
	// Certificate is the certificate's state when HTTPS is on.
	Certificate string `json:"certificate,omitempty"`
}

// HostnameRequest is the body of PUT /v1/apps/{name}/hostnames/{host}.
type HostnameRequest struct {
	Label string `json:"label,omitempty"`
}

func (c *ctl) hostnameViews(d app.Doc) []HostnameView {
	out := []HostnameView{}
	for _, h := range d.Hostnames {
		v := HostnameView{Hostname: h, URL: c.hostURL(h.Host) + mcpPath(d)}
		if c.o.Names != nil {
			v.Certificate = c.o.Names.Status(h.Host)
		}
		out = append(out, v)
	}
	return out
}

func (c *ctl) listHostnames(w http.ResponseWriter, r *http.Request) error {
	a, err := c.getApp(r)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"value": c.hostnameViews(a.Doc())})
	return nil
}

func (c *ctl) addHostname(w http.ResponseWriter, r *http.Request) error {
	m, err := c.apps()
	if err != nil {
		return err
	}
	var req HostnameRequest
	if r.ContentLength != 0 {
		if err := httpapi.DecodeJSON(w, r, 4<<10, &req); err != nil {
			return err
		}
	}
	host := r.PathValue("host")
	if err := app.ValidHostname(host, c.o.AppDomain); err != nil {
		return appError(err)
	}
	if _, err := m.Get(r.PathValue("name")); err != nil {
		return appError(err)
	}
	d, err := m.AddHostname(r.Context(), r.PathValue("name"), host, req.Label)
	if err != nil {
		return hostError(err)
	}
	if c.o.Names != nil {
		c.o.Names.AppChanged(r.Context(), d)
	}
	for _, v := range c.hostnameViews(d) {
		if v.Host == host {
			httpapi.WriteJSON(w, http.StatusOK, v)
		}
	}
	return nil
}

func (c *ctl) deleteHostname(w http.ResponseWriter, r *http.Request) error {
	m, err := c.apps()
	if err != nil {
		return err
	}
	d, err := m.DeleteHostname(r.Context(), r.PathValue("name"), r.PathValue("host"))
	if err != nil {
		return hostError(err)
	}
	if c.o.Names != nil {
		c.o.Names.AppChanged(r.Context(), d)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func hostError(err error) error {
	switch {
	case errors.Is(err, app.ErrHostTaken):
		return httpapi.Errorf(http.StatusConflict, "HostnameInUse", err.Error())
	case errors.Is(err, app.ErrHostNotFound):
		return httpapi.Errorf(http.StatusNotFound, "HostnameNotFound", err.Error())
	case errors.Is(err, app.ErrLabelNotFound):
		return httpapi.Errorf(http.StatusBadRequest, "LabelNotFound", err.Error())
	}
	return appError(err)
}

// hostURL is the base URL of host on the public listener (its scheme and
// port).
func (c *ctl) hostURL(host string) string {
	pub := strings.TrimRight(c.o.PublicURL, "/")
	scheme, hostport, _ := strings.Cut(pub, "://")
	if _, port, found := strings.Cut(hostport, ":"); found {
		host += ":" + port
	}
	return scheme + "://" + host
}

func mcpPath(d app.Doc) string {
	if n := len(d.Revisions); n > 0 {
		return d.Revisions[n-1].Config.Path
	}
	return "/mcp"
}
