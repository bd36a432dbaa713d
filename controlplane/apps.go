package controlplane

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/app"
	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/httpapi"
)

func (c *ctl) appRoutes(handle func(string, httpapi.HandlerFunc)) {
	handle("GET /v1/apps", c.listApps)
	handle("GET /v1/apps/{name}", c.showApp)
	handle("POST /v1/apps/{name}/revisions", c.deploy)
	handle("PUT /v1/apps/{name}/traffic", c.traffic)
	handle("DELETE /v1/apps/{name}", c.deleteApp)
	handle("GET /v1/apps/{name}/logs", c.appLogs)
	handle("PUT /v1/apps/{name}/auth", c.setAppAuth)
	handle("GET /v1/apps/{name}/keys", c.listAppKeys)
	handle("POST /v1/apps/{name}/keys", c.createAppKey)
	handle("DELETE /v1/apps/{name}/keys/{key}", c.revokeAppKey)
	handle("GET /v1/apps/{name}/secrets", c.listSecrets)
	handle("PUT /v1/apps/{name}/secrets/{secret}", c.setSecret)
	handle("DELETE /v1/apps/{name}/secrets/{secret}", c.deleteSecret)
	handle("POST /v1/apps/{name}/restart", c.restartApp)
}

// AppView is an app as the API shows it.
type AppView struct {
	app.Doc
	// APIKeys hides the doc's key hashes: names and dates only.
	APIKeys  []AppKeyView      `json:"apiKeys,omitempty"`
	URLs     AppURLs           `json:"urls"`
	Replicas []app.ReplicaInfo `json:"replicas"`
}

// AppURLs are an app's addresses: by host name and by path, and per label.
type AppURLs struct {
	Host   string            `json:"host"`
	Path   string            `json:"path"`
	Labels map[string]string `json:"labels,omitempty"`
	// Hostnames are the app's custom domains.
	Hostnames []HostnameView `json:"hostnames,omitempty"`
}

func (c *ctl) appView(a *app.App) AppView {
	d := a.Doc()
	pub := strings.TrimRight(c.o.PublicURL, "/")
	scheme, hostport, _ := strings.Cut(pub, "://")
	_, port, found := strings.Cut(hostport, ":")
	hostURL := func(host string) string {
		if found {
			host += ":" + port
		}
		return scheme + "://" + host
	}
	mcpPath := "/mcp"
	if n := len(d.Revisions); n > 0 {
		mcpPath = d.Revisions[n-1].Config.Path
	}
	v := AppView{Doc: d, Replicas: a.Replicas(), APIKeys: keyViews(d.APIKeys), URLs: AppURLs{
		Host: hostURL(d.Name+"."+c.o.AppDomain) + mcpPath,
		Path: pub + "/apps/" + d.Name + mcpPath,
	}}
	for label := range d.Labels {
		if v.URLs.Labels == nil {
			v.URLs.Labels = map[string]string{}
		}
		v.URLs.Labels[label] = pub + "/apps/" + d.Name + "---" + label + mcpPath
	}
	if len(d.Hostnames) > 0 {
		v.URLs.Hostnames = c.hostnameViews(d)
	}
	return v
}

func (c *ctl) apps() (*app.Manager, error) {
	if c.o.Apps == nil {
		return nil, httpapi.Errorf(http.StatusNotImplemented, "NoApps", "this server does not host apps")
	}
	return c.o.Apps, nil
}

func (c *ctl) listApps(w http.ResponseWriter, r *http.Request) error {
	m, err := c.apps()
	if err != nil {
		return err
	}
	out := []AppView{}
	for _, a := range m.List() {
		out = append(out, c.appView(a))
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"value": out})
	return nil
}

func (c *ctl) getApp(r *http.Request) (*app.App, error) {
	m, err := c.apps()
	if err != nil {
		return nil, err
	}
	a, err := m.Get(r.PathValue("name"))
	if errors.Is(err, app.ErrNotFound) {
		return nil, httpapi.Errorf(http.StatusNotFound, "AppNotFound", err.Error())
	}
	return a, err
}

func (c *ctl) showApp(w http.ResponseWriter, r *http.Request) error {
	a, err := c.getApp(r)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, c.appView(a))
	return nil
}

func appError(err error) error {
	var ce *app.ConfigError
	if errors.As(err, &ce) && !ce.NotFound {
		return httpapi.Errorf(http.StatusBadRequest, "InvalidSetting", ce.Message)
	}
	if errors.As(err, &ce) && ce.NotFound {
		return httpapi.Errorf(http.StatusNotFound, "NotFound", ce.Message)
	}
	if errors.Is(err, app.ErrNotFound) {
		return httpapi.Errorf(http.StatusNotFound, "AppNotFound", err.Error())
	}
	return err
}

func (c *ctl) deploy(w http.ResponseWriter, r *http.Request) error {
	m, err := c.apps()
	if err != nil {
		return err
	}
	var cfg app.Config
	if err := httpapi.DecodeJSON(w, r, 1<<20, &cfg); err != nil {
		return err
	}
	if strings.Contains(r.Header.Get("Accept"), "application/x-ndjson") {
		return c.deployStreaming(w, r, m, cfg)
	}
	out, err := c.deployed(r, m, cfg, nil)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusCreated, out)
	return nil
}

// DeployResult is the answer to a deploy.
type DeployResult struct {
	Revision app.Revision `json:"revision"`
	App      AppView      `json:"app"`
}

// DeployEvent is one line of a deploy's NDJSON answer (asked for with
// Accept: application/x-ndjson): the image pull's progress, then the
// result or an error.
type DeployEvent struct {
	Progress *image.Progress `json:"progress,omitempty"`
	Result   *DeployResult   `json:"result,omitempty"`
	Error    string          `json:"error,omitempty"`
	Code     string          `json:"code,omitempty"`
}

func (c *ctl) deployed(r *http.Request, m *app.Manager, cfg app.Config, progress func(image.Progress)) (*DeployResult, error) {
	d, rev, err := m.DeployProgress(r.Context(), r.PathValue("name"), cfg, progress)
	if err != nil {
		return nil, appError(err)
	}
	if c.o.Names != nil {
		c.o.Names.AppChanged(r.Context(), d)
	}
	a, err := m.Get(r.PathValue("name"))
	if err != nil {
		return nil, appError(err)
	}
	return &DeployResult{Revision: rev, App: c.appView(a)}, nil
}

// deployStreaming deploys telling the client how the image pull goes.
func (c *ctl) deployStreaming(w http.ResponseWriter, r *http.Request, m *app.Manager, cfg app.Config) error {
	send := httpapi.NDJSON(w)
	w.WriteHeader(http.StatusOK)
	out, err := c.deployed(r, m, cfg, func(p image.Progress) {
		_ = send(DeployEvent{Progress: &p})
	})
	if err != nil {
		e := httpapi.Classify(err)
		if e.Status >= 500 {
			c.o.Logger.Error("deploy failed", "app", r.PathValue("name"), "err", err)
		}
		_ = send(DeployEvent{Error: e.Message, Code: e.Code})
	} else {
		_ = send(DeployEvent{Result: out})
	}
	return nil
}

// TrafficRequest is the body of PUT /v1/apps/{name}/traffic.
type TrafficRequest struct {
	Traffic []app.TrafficTarget `json:"traffic,omitempty"`
	Labels  map[string]string   `json:"labels,omitempty"`
}

func (c *ctl) traffic(w http.ResponseWriter, r *http.Request) error {
	m, err := c.apps()
	if err != nil {
		return err
	}
	var req TrafficRequest
	if err := httpapi.DecodeJSON(w, r, 64<<10, &req); err != nil {
		return err
	}
	d, err := m.SetTraffic(r.Context(), r.PathValue("name"), req.Traffic, req.Labels)
	if err != nil {
		return appError(err)
	}
	c.event(events.Event{Kind: "traffic", App: d.Name, Message: "traffic set to " + trafficText(d.Traffic)})
	if c.o.Names != nil {
		c.o.Names.AppChanged(r.Context(), d)
	}
	a, err := m.Get(r.PathValue("name"))
	if err != nil {
		return appError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, c.appView(a))
	return nil
}

func (c *ctl) deleteApp(w http.ResponseWriter, r *http.Request) error {
	m, err := c.apps()
	if err != nil {
		return err
	}
	if err := m.Delete(r.Context(), r.PathValue("name")); err != nil {
		return appError(err)
	}
	c.event(events.Event{Kind: "app-deleted", App: r.PathValue("name"), Message: "app deleted"})
	if c.o.Names != nil {
		c.o.Names.AppDeleted(r.PathValue("name"))
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (c *ctl) appLogs(w http.ResponseWriter, r *http.Request) error {
	a, err := c.getApp(r)
	if err != nil {
		return err
	}
	send := httpapi.NDJSON(w)
	return a.Logs(r.Context(), r.URL.Query().Get("follow") == "true", func(e app.LogEntry) error {
		_ = send(e) // an error: the client went away
		return nil
	})
}

func trafficText(t []app.TrafficTarget) string {
	parts := make([]string, 0, len(t))
	for _, x := range t {
		parts = append(parts, x.Revision+"="+strconv.Itoa(x.Percent)+"%")
	}
	return strings.Join(parts, ", ")
}
