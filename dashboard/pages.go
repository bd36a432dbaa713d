package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/app"
	"github.com/berth-dev/berth/controlplane"
	"github.com/berth-dev/berth/dataplane"
	"github.com/berth-dev/berth/internal/events"
)

// page is what every template gets.
type page struct {
	Title    string
	CSRF     string
	SignedIn bool
	User     string // who signed in through OIDC
	Nav      string
	Flash    string
	Error    string
	Data     any
}

func parseTemplates() map[string]*template.Template {
	funcs := template.FuncMap{
		"bytes":   humanBytes,
		"ago":     ago,
		"ms":      func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) },
		"join":    strings.Join,
		"percent": percent,
		"minutes": func(secs int64) string {
			if secs >= 3600 {
				return "hour"
			}
			return strconv.FormatInt(max(secs/60, 1), 10) + " min"
		},
		"mib": func(b int64) int64 { return b >> 20 },
		"add": func(a, b int) int { return a + b },
		"json": func(v any) string {
			b, _ := json.MarshalIndent(v, "", "  ")
			return string(b)
		},
	}
	out := map[string]*template.Template{}
	for _, name := range []string{"login", "overview", "app", "pool", "error", "refused", "continue"} {
		out[name] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html"))
	}
	return out
}

// render writes a page; s is nil on pages for signed-out browsers.
func (d *dash) render(w http.ResponseWriter, r *http.Request, status int, name string, s *session, data any) {
	p := page{Title: name, Nav: name, Data: data}
	if m, ok := data.(map[string]any); ok {
		if e, ok := m["Error"].(string); ok {
			p.Error = e
		}
	}
	if s != nil {
		p.CSRF, p.SignedIn, p.User = s.csrf, true, s.user
	}
	var buf bytes.Buffer
	if err := d.tpl[name].Execute(&buf, p); err != nil {
		d.o.Logger.Error("dashboard template", "page", name, "err", err)
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

// fail shows an error page (for an API error, its status and message).
func (d *dash) fail(w http.ResponseWriter, r *http.Request, s *session, status int, msg string) {
	d.render(w, r, status, "error", s, map[string]any{"Error": msg, "Status": status})
}

func (d *dash) apiFail(w http.ResponseWriter, r *http.Request, s *session, err error) {
	var ae *apiError
	if errors.As(err, &ae) {
		d.fail(w, r, s, ae.Status, ae.Message)
		return
	}
	if errors.Is(err, context.Canceled) {
		return
	}
	d.o.Logger.Error("dashboard", "path", r.URL.Path, "err", err)
	d.fail(w, r, s, http.StatusBadGateway, err.Error())
}

// get calls GET path on the control API for the session.
func (d *dash) get(r *http.Request, s *session, path string, out any) error {
	return d.api.call(r.Context(), s.token, http.MethodGet, path, nil, out)
}

type list[T any] struct {
	Value []T `json:"value"`
}

// overviewData is the overview page.
type overviewData struct {
	Apps   []appRow
	Pools  []controlplane.PoolView
	Events []events.Event
}

type appRow struct {
	controlplane.AppView
	Ready, Wanted int
	Metrics       controlplane.AppMetrics
}

func (d *dash) overview(w http.ResponseWriter, r *http.Request, s *session) {
	var apps list[controlplane.AppView]
	var pools list[controlplane.PoolView]
	var metrics list[controlplane.AppMetrics]
	var evs list[events.Event]
	for _, c := range []struct {
		path string
		out  any
	}{{"/v1/apps", &apps}, {"/v1/pools", &pools}, {"/v1/metrics/apps", &metrics}, {"/v1/events?limit=30", &evs}} {
		if err := d.get(r, s, c.path, c.out); err != nil {
			var ae *apiError
			if errors.As(err, &ae) && ae.Status == http.StatusNotImplemented {
				continue // a server without apps, or without metrics
			}
			d.apiFail(w, r, s, err)
			return
		}
	}
	byName := map[string]controlplane.AppMetrics{}
	for _, m := range metrics.Value {
		byName[m.App] = m
	}
	data := overviewData{Pools: pools.Value, Events: newestFirst(evs.Value)}
	for _, a := range apps.Value {
		row := appRow{AppView: a, Metrics: byName[a.Name]}
		row.Ready, row.Wanted = replicaCounts(a)
		data.Apps = append(data.Apps, row)
	}
	d.render(w, r, http.StatusOK, "overview", s, data)
}

// replicaCounts are an app's ready replicas, and the replicas its active
// revisions want at least (their minimum, or what runs if more).
func replicaCounts(a controlplane.AppView) (ready, wanted int) {
	running := map[string]int{}
	for _, rp := range a.Replicas {
		running[rp.Revision]++
		if rp.Ready {
			ready++
		}
	}
	for _, rev := range a.Revisions {
		if active(a, rev.Name) {
			wanted += max(rev.Config.Min, running[rev.Name])
		}
	}
	return ready, wanted
}

func active(a controlplane.AppView, rev string) bool {
	for _, t := range a.Traffic {
		if t.Revision == rev && t.Percent > 0 {
			return true
		}
	}
	for _, r := range a.Labels {
		if r == rev {
			return true
		}
	}
	return false
}

func newestFirst(evs []events.Event) []events.Event {
	sort.Slice(evs, func(i, j int) bool { return evs[i].Seq > evs[j].Seq })
	return evs
}

// appData is the app page.
type appData struct {
	App          controlplane.AppView
	Revisions    []revisionRow
	Metrics      controlplane.AppMetrics
	Events       []events.Event
	Ready        int
	Wanted       int
	TrafficError string
	Flash        string
}

type revisionRow struct {
	Name      string
	CreatedAt time.Time
	Percent   int
	Labels    []string
	Active    bool
	Replicas  int
	Command   string
	Min, Max  int
}

func (d *dash) loadApp(r *http.Request, s *session, name string) (*appData, error) {
	var a controlplane.AppView
	if err := d.get(r, s, "/v1/apps/"+url.PathEscape(name), &a); err != nil {
		return nil, err
	}
	var metrics list[controlplane.AppMetrics]
	if err := d.get(r, s, "/v1/metrics/apps?app="+url.QueryEscape(name), &metrics); err != nil {
		var ae *apiError
		if !errors.As(err, &ae) || ae.Status != http.StatusNotImplemented {
			return nil, err
		}
	}
	var evs list[events.Event]
	if err := d.get(r, s, "/v1/events?limit=20&app="+url.QueryEscape(name), &evs); err != nil {
		return nil, err
	}
	data := &appData{App: a, Events: newestFirst(evs.Value)}
	if len(metrics.Value) > 0 {
		data.Metrics = metrics.Value[0]
	}
	data.Ready, data.Wanted = replicaCounts(a)
	for i := len(a.Revisions) - 1; i >= 0; i-- {
		rev := a.Revisions[i]
		row := revisionRow{Name: rev.Name, CreatedAt: rev.CreatedAt, Active: active(a, rev.Name), Command: runs(rev.Config), Min: rev.Config.Min, Max: rev.Config.Max}
		for _, t := range a.Traffic {
			if t.Revision == rev.Name {
				row.Percent = t.Percent
			}
		}
		for l, target := range a.Labels {
			if target == rev.Name {
				row.Labels = append(row.Labels, l)
			}
		}
		sort.Strings(row.Labels)
		for _, rp := range a.Replicas {
			if rp.Revision == rev.Name {
				row.Replicas++
			}
		}
		data.Revisions = append(data.Revisions, row)
	}
	return data, nil
}

func (d *dash) appPage(w http.ResponseWriter, r *http.Request, s *session) {
	data, err := d.loadApp(r, s, r.PathValue("name"))
	if err != nil {
		d.apiFail(w, r, s, err)
		return
	}
	if r.URL.Query().Get("saved") == "traffic" {
		data.Flash = "Traffic split saved."
	}
	if rev := r.URL.Query().Get("deployed"); rev != "" {
		data.Flash = "Revision " + rev + " created."
	}
	d.render(w, r, http.StatusOK, "app", s, data)
}

// setTraffic takes the editor's percentages (fields "pct:REVISION"),
// checks they sum to 100 and sets them through the API.
func (d *dash) setTraffic(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	_ = r.ParseForm()
	var req controlplane.TrafficRequest
	sum, bad := 0, ""
	for k, vs := range r.PostForm {
		rev, ok := strings.CutPrefix(k, "pct:")
		if !ok || len(vs) == 0 {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(vs[0]))
		if err != nil || n < 0 || n > 100 {
			bad = fmt.Sprintf("%s: %q is not a percentage from 0 to 100", rev, vs[0])
			continue
		}
		sum += n
		if n > 0 {
			req.Traffic = append(req.Traffic, app.TrafficTarget{Revision: rev, Percent: n})
		}
	}
	if bad == "" && sum != 100 {
		bad = fmt.Sprintf("The percentages add up to %d; they must add up to 100.", sum)
	}
	if bad == "" {
		sort.Slice(req.Traffic, func(i, j int) bool { return req.Traffic[i].Revision < req.Traffic[j].Revision })
		err := d.api.call(r.Context(), s.token, http.MethodPut, "/v1/apps/"+url.PathEscape(name)+"/traffic", req, nil)
		if err == nil {
			http.Redirect(w, r, "/ui/apps/"+url.PathEscape(name)+"?saved=traffic", http.StatusSeeOther)
			return
		}
		bad = err.Error()
	}
	data, err := d.loadApp(r, s, name)
	if err != nil {
		d.apiFail(w, r, s, err)
		return
	}
	data.TrafficError = bad
	d.render(w, r, http.StatusBadRequest, "app", s, data)
}

// deploy makes a new revision from an uploaded archive (a gzipped tar of
// the app's files, as "berth app deploy --dir" sends): the archive goes to
// POST /v1/sources, and the latest revision's settings, with the new
// source (and command, if given), to POST /v1/apps/{name}/revisions.
func (d *dash) deploy(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	f, _, err := r.FormFile("archive")
	if err != nil {
		d.fail(w, r, s, http.StatusBadRequest, "Choose an archive (a .tar.gz of the app's files) to deploy.")
		return
	}
	defer f.Close()
	var a controlplane.AppView
	if err := d.get(r, s, "/v1/apps/"+url.PathEscape(name), &a); err != nil {
		d.apiFail(w, r, s, err)
		return
	}
	if len(a.Revisions) == 0 {
		d.fail(w, r, s, http.StatusBadRequest, "This app has no revision to take settings from.")
		return
	}
	res, err := d.api.do(r.Context(), d.api.api, http.MethodPost, "http://control/v1/sources",
		http.Header{"Authorization": {"Bearer " + s.token}, "Content-Type": {"application/gzip"}}, f)
	if err != nil {
		d.apiFail(w, r, s, err)
		return
	}
	var src struct {
		Digest string `json:"digest"`
	}
	err = json.NewDecoder(res.Body).Decode(&src)
	res.Body.Close()
	if err != nil {
		d.apiFail(w, r, s, err)
		return
	}
	cfg := a.Revisions[len(a.Revisions)-1].Config
	cfg.Dir, cfg.Source = "", &app.Source{Archive: src.Digest}
	cfg.RevisionSuffix = strings.TrimSpace(r.FormValue("revisionSuffix"))
	if c := strings.TrimSpace(r.FormValue("command")); c != "" {
		cfg.Command = c
	}
	var out struct {
		Revision app.Revision `json:"revision"`
	}
	if err := d.api.call(r.Context(), s.token, http.MethodPost, "/v1/apps/"+url.PathEscape(name)+"/revisions", cfg, &out); err != nil {
		d.apiFail(w, r, s, err)
		return
	}
	http.Redirect(w, r, "/ui/apps/"+url.PathEscape(name)+"?deployed="+url.QueryEscape(out.Revision.Name), http.StatusSeeOther)
}

// runs is what a revision runs, for the revisions table.
func runs(c app.Config) string {
	if !c.HasImage() {
		return c.Command
	}
	return strings.Join(append(append([]string{"image " + c.Source.Image}, c.Entrypoint...), c.Args...), " ")
}

// appLogs passes the app's log stream (NDJSON, follow) on to the page's
// script.
func (d *dash) appLogs(w http.ResponseWriter, r *http.Request, s *session) {
	q := "/v1/apps/" + url.PathEscape(r.PathValue("name")) + "/logs"
	if r.URL.Query().Get("follow") != "false" {
		q += "?follow=true"
	}
	res, err := d.api.stream(r.Context(), s.token, q)
	if err != nil {
		d.apiFail(w, r, s, err)
		return
	}
	defer res.Body.Close()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := res.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			_ = rc.Flush()
		}
		if err != nil {
			return
		}
	}
}

// sessionsPerPage bounds the pool page's session table.
const sessionsPerPage = 50

// poolData is the pool page.
type poolData struct {
	Pool     controlplane.PoolView
	Sessions []controlplane.SessionView
	// Total sessions that match Filter; Page (from 0) of them is shown.
	Total, Page, Pages int
	Filter             string
	Events             []events.Event
	NewKey             string
	Flash              string
	Console            consoleData
	Settings           string
}

type consoleData struct {
	Identifier string
	Code       string
	Result     *dataplane.ExecuteResult
	Error      string
	Files      []fileInfo
}

type fileInfo = dataplane.FileProperties

func (d *dash) loadPool(r *http.Request, s *session, name string) (*poolData, error) {
	data := &poolData{}
	if err := d.get(r, s, "/v1/pools/"+url.PathEscape(name), &data.Pool); err != nil {
		return nil, err
	}
	var sessions struct {
		Value []controlplane.SessionView `json:"value"`
		Total int                        `json:"total"`
	}
	data.Filter = r.URL.Query().Get("filter")
	data.Page, _ = strconv.Atoi(r.URL.Query().Get("page"))
	data.Page = max(data.Page, 0)
	q := url.Values{"offset": {strconv.Itoa(data.Page * sessionsPerPage)}, "limit": {strconv.Itoa(sessionsPerPage)}}
	if data.Filter != "" {
		q.Set("filter", data.Filter)
	}
	if err := d.get(r, s, "/v1/pools/"+url.PathEscape(name)+"/sessions?"+q.Encode(), &sessions); err != nil {
		return nil, err
	}
	data.Total = sessions.Total
	data.Pages = (sessions.Total + sessionsPerPage - 1) / sessionsPerPage
	var evs list[events.Event]
	if err := d.get(r, s, "/v1/events?limit=20&pool="+url.QueryEscape(name), &evs); err != nil {
		return nil, err
	}
	data.Sessions, data.Events = sessions.Value, newestFirst(evs.Value)
	data.Console.Identifier = r.URL.Query().Get("identifier")
	if data.Console.Identifier == "" {
		data.Console.Identifier = "ui-" + randomHex(4)
	}
	return data, nil
}

func (d *dash) poolPage(w http.ResponseWriter, r *http.Request, s *session) {
	data, err := d.loadPool(r, s, r.PathValue("name"))
	if err != nil {
		d.apiFail(w, r, s, err)
		return
	}
	switch r.URL.Query().Get("done") {
	case "settings":
		data.Flash = "Settings saved."
	case "ended":
		data.Flash = "Session " + r.URL.Query().Get("session") + " ended."
	case "uploaded":
		data.Flash = "Uploaded " + r.URL.Query().Get("file") + "."
	}
	if id := r.URL.Query().Get("identifier"); id != "" && data.Pool.Status.Sessions > 0 {
		data.Console.Files = d.files(r, s, r.PathValue("name"), id)
	}
	d.render(w, r, http.StatusOK, "pool", s, data)
}

// poolSettings patches the pool with the form's fields.
func (d *dash) poolSettings(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	_ = r.ParseForm()
	var pt controlplane.Patch
	var bad []string
	intField := func(field string, dst **int) {
		if v := strings.TrimSpace(r.PostForm.Get(field)); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				bad = append(bad, field+" must be a whole number")
				return
			}
			*dst = &n
		}
	}
	intField("readySessions", &pt.Ready)
	intField("maxSessions", &pt.Max)
	intField("cooldownSeconds", &pt.CooldownSeconds)
	intField("timeoutSeconds", &pt.TimeoutSeconds)
	if v := strings.TrimSpace(r.PostForm.Get("memoryMiB")); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			bad = append(bad, "memory must be a whole number of MiB")
		} else {
			b := n << 20
			pt.MemoryBytes = &b
		}
	}
	if v := strings.TrimSpace(r.PostForm.Get("cpu")); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			bad = append(bad, "cpu must be a number")
		} else {
			pt.CPU = &f
		}
	}
	if v := r.PostForm.Get("egress"); v != "" {
		pt.Egress = &v
	}
	var err error
	if len(bad) == 0 {
		if err = d.api.call(r.Context(), s.token, http.MethodPatch, "/v1/pools/"+url.PathEscape(name), pt, nil); err == nil {
			http.Redirect(w, r, "/ui/pools/"+url.PathEscape(name)+"?done=settings", http.StatusSeeOther)
			return
		}
		bad = append(bad, err.Error())
	}
	data, err := d.loadPool(r, s, name)
	if err != nil {
		d.apiFail(w, r, s, err)
		return
	}
	data.Settings = strings.Join(bad, "; ")
	d.render(w, r, http.StatusBadRequest, "pool", s, data)
}

// rotateKey shows the new key on this response only.
func (d *dash) rotateKey(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	var out struct {
		APIKey string `json:"apiKey"`
	}
	if err := d.api.call(r.Context(), s.token, http.MethodPost, "/v1/pools/"+url.PathEscape(name)+"/rotate-key", nil, &out); err != nil {
		d.apiFail(w, r, s, err)
		return
	}
	data, err := d.loadPool(r, s, name)
	if err != nil {
		d.apiFail(w, r, s, err)
		return
	}
	data.NewKey = out.APIKey
	d.render(w, r, http.StatusOK, "pool", s, data)
}

func (d *dash) endSession(w http.ResponseWriter, r *http.Request, s *session) {
	name, id := r.PathValue("name"), r.PathValue("id")
	if err := d.api.call(r.Context(), s.token, http.MethodDelete, "/v1/pools/"+url.PathEscape(name)+"/sessions/"+url.PathEscape(id), nil, nil); err != nil {
		d.apiFail(w, r, s, err)
		return
	}
	http.Redirect(w, r, "/ui/pools/"+url.PathEscape(name)+"?done=ended&session="+url.QueryEscape(id), http.StatusSeeOther)
}

// poolKey fetches the pool's key from the control API, for the data plane.
func (d *dash) poolKey(r *http.Request, s *session, name string) (string, error) {
	var out struct {
		APIKey string `json:"apiKey"`
	}
	err := d.api.call(r.Context(), s.token, http.MethodPost, "/v1/pools/"+url.PathEscape(name)+"/credentials", nil, &out)
	return out.APIKey, err
}

// console runs code in a session through the pool's data plane and shows
// its output when it ends; the page's script asks for NDJSON instead and
// gets the output as it comes (consoleStream).
func (d *dash) console(w http.ResponseWriter, r *http.Request, s *session) {
	if strings.Contains(r.Header.Get("Accept"), "application/x-ndjson") {
		d.consoleStream(w, r, s)
		return
	}
	name := r.PathValue("name")
	id, code := strings.TrimSpace(r.PostFormValue("identifier")), r.PostFormValue("code")
	c := consoleData{Identifier: id, Code: code}
	if err := d.execute(r, s, name, &c); err != nil {
		c.Error = err.Error()
	}
	data, err := d.loadPool(r, s, name)
	if err != nil {
		d.apiFail(w, r, s, err)
		return
	}
	c.Files = d.files(r, s, name, id)
	data.Console = c
	d.render(w, r, http.StatusOK, "pool", s, data)
}

func (d *dash) execute(r *http.Request, s *session, name string, c *consoleData) error {
	res, err := d.executeAt(r, s, name, c.Identifier, c.Code, "application/json")
	if err != nil {
		return err
	}
	defer res.Body.Close()
	var out dataplane.ExecuteResponse
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		return err
	}
	c.Result = &out.Properties
	return nil
}

// executeAt sends code to the session's POST …/code/execute, asking for
// the answer as accept.
func (d *dash) executeAt(r *http.Request, s *session, name, id, code, accept string) (*http.Response, error) {
	if id == "" {
		return nil, errors.New("pick or type a session identifier")
	}
	key, err := d.poolKey(r, s, name)
	if err != nil {
		return nil, err
	}
	var req dataplane.ExecuteRequest
	req.Properties.CodeInputType, req.Properties.ExecutionType, req.Properties.Code = "inline", "synchronous", &code
	body, _ := json.Marshal(req)
	return d.api.data(r.Context(), key, http.MethodPost, "/pools/"+url.PathEscape(name)+"/code/execute?identifier="+url.QueryEscape(id),
		http.Header{"Content-Type": {"application/json"}, "Accept": {accept}}, bytes.NewReader(body))
}

// consoleStream passes on the data plane's NDJSON answer as it comes:
// {"stdout":"…"} and {"stderr":"…"} lines, then {"properties":{…}}, or
// an error document {"error":{"code","message"}} as the last line. The
// browser going away cancels the execution, as the data plane does.
func (d *dash) consoleStream(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	res, err := d.executeAt(r, s, name, strings.TrimSpace(r.PostFormValue("identifier")), r.PostFormValue("code"), "application/x-ndjson")
	if err != nil {
		var doc struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		doc.Error.Code, doc.Error.Message = "BadRequest", err.Error()
		var ae *apiError
		if errors.As(err, &ae) && ae.Code != "" {
			doc.Error.Code = ae.Code
		}
		b, _ := json.Marshal(doc)
		_, _ = w.Write(append(b, '\n'))
		return
	}
	defer res.Body.Close()
	_, _ = io.Copy(flushWriter{w, http.NewResponseController(w)}, res.Body)
}

// flushWriter flushes each write through to the client.
type flushWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}

// files lists a session's files (nothing if it has none or is gone).
func (d *dash) files(r *http.Request, s *session, name, id string) []fileInfo {
	if id == "" {
		return nil
	}
	key, err := d.poolKey(r, s, name)
	if err != nil {
		return nil
	}
	res, err := d.api.data(r.Context(), key, http.MethodGet, "/pools/"+url.PathEscape(name)+"/files?identifier="+url.QueryEscape(id), nil, nil)
	if err != nil {
		return nil
	}
	defer res.Body.Close()
	var out struct {
		Value []struct {
			Properties fileInfo `json:"properties"`
		} `json:"value"`
	}
	_ = json.NewDecoder(res.Body).Decode(&out)
	files := make([]fileInfo, 0, len(out.Value))
	for _, v := range out.Value {
		files = append(files, v.Properties)
	}
	return files
}

// upload sends the form's file to the session through the data plane.
func (d *dash) upload(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	id := strings.TrimSpace(r.FormValue("identifier"))
	f, fh, err := r.FormFile("file")
	if err != nil || id == "" {
		d.fail(w, r, s, http.StatusBadRequest, "Choose a file and a session identifier to upload to.")
		return
	}
	defer f.Close()
	key, err := d.poolKey(r, s, name)
	if err != nil {
		d.apiFail(w, r, s, err)
		return
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		part, err := mw.CreateFormFile("file", fh.Filename)
		if err == nil {
			_, err = io.Copy(part, f)
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	res, err := d.api.data(r.Context(), key, http.MethodPost, "/pools/"+url.PathEscape(name)+"/files/upload?identifier="+url.QueryEscape(id),
		http.Header{"Content-Type": {mw.FormDataContentType()}}, pr)
	pr.Close()
	if err != nil {
		d.apiFail(w, r, s, err)
		return
	}
	res.Body.Close()
	http.Redirect(w, r, "/ui/pools/"+url.PathEscape(name)+"?done=uploaded&identifier="+url.QueryEscape(id)+"&file="+url.QueryEscape(fh.Filename)+"#console", http.StatusSeeOther)
}

// download passes a session's file on from the data plane.
func (d *dash) download(w http.ResponseWriter, r *http.Request, s *session) {
	name, id, file := r.PathValue("name"), r.URL.Query().Get("identifier"), r.URL.Query().Get("file")
	key, err := d.poolKey(r, s, name)
	if err != nil {
		d.apiFail(w, r, s, err)
		return
	}
	res, err := d.api.data(r.Context(), key, http.MethodGet, "/pools/"+url.PathEscape(name)+"/files/content/"+escapePath(file)+"?identifier="+url.QueryEscape(id), nil, nil)
	if err != nil {
		d.apiFail(w, r, s, err)
		return
	}
	defer res.Body.Close()
	for _, h := range []string{"Content-Type", "Content-Disposition", "Content-Length"} {
		if v := res.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	if _, err := io.Copy(w, res.Body); err != nil {
		d.o.Logger.Debug("dashboard download", "err", err)
	}
}

func escapePath(p string) string {
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}

func humanBytes(v any) string {
	var n float64
	switch x := v.(type) {
	case int64:
		n = float64(x)
	case uint64:
		n = float64(x)
	case int:
		n = float64(x)
	}
	for _, u := range []string{"B", "KiB", "MiB", "GiB"} {
		if n < 1024 || u == "GiB" {
			if u == "B" {
				return fmt.Sprintf("%.0f %s", n, u)
			}
			return fmt.Sprintf("%.1f %s", n, u)
		}
		n /= 1024
	}
	return ""
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func percent(part, whole int64) string {
	if whole == 0 {
		return "0%"
	}
	return strconv.FormatFloat(100*float64(part)/float64(whole), 'f', 1, 64) + "%"
}
