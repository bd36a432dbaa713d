package dashboard

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/app"
	"github.com/berth-dev/berth/controlplane"
)

// imageConfig is the new revision's settings: the latest revision's, with
// the form's image, and its command, arguments, port and environment
// (empty command, arguments or port: the image's).
func imageConfig(r *http.Request, latest app.Config) (app.Config, error) {
	cfg := latest
	ref := strings.TrimSpace(r.PostFormValue("image"))
	if ref == "" {
		return cfg, errors.New("type the image reference to deploy (for example registry.example.com/team/app:1.2)")
	}
	cfg.Dir, cfg.Command = "", ""
	cfg.Source = &app.Source{Image: ref}
	cfg.Entrypoint, cfg.Args = lines(r.PostFormValue("command")), lines(r.PostFormValue("args"))
	cfg.Port = 0
	if p := strings.TrimSpace(r.PostFormValue("port")); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return cfg, fmt.Errorf("port %q is not a port number", p)
		}
		cfg.Port = n
	}
	if env := lines(r.PostFormValue("env")); len(env) > 0 {
		cfg.Env = map[string]string{}
		for k, v := range latest.Env {
			cfg.Env[k] = v
		}
		for _, kv := range env {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || strings.TrimSpace(k) == "" {
				return cfg, fmt.Errorf("environment line %q is not NAME=VALUE", kv)
			}
			cfg.Env[strings.TrimSpace(k)] = v
		}
	}
	cfg.RevisionSuffix = strings.TrimSpace(r.PostFormValue("revisionSuffix"))
	return cfg, nil
}

// lines are a text area's non-empty lines (one word of a command each:
// no quoting to get wrong).
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimRight(l, "\r"); strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// deployImage makes a new revision from an image. The page's script asks
// for NDJSON and gets the control API's deploy stream as it comes (each
// layer's pull progress, then the result or the error); a browser without
// script waits for the result and is sent back to the app page.
func (d *dash) deployImage(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	_ = r.ParseForm()
	var a controlplane.AppView
	if err := d.get(r, s, "/v1/apps/"+url.PathEscape(name), &a); err != nil {
		d.apiFail(w, r, s, err)
		return
	}
	if len(a.Revisions) == 0 {
		d.fail(w, r, s, http.StatusBadRequest, "This app has no revision to take settings from.")
		return
	}
	cfg, err := imageConfig(r, a.Revisions[len(a.Revisions)-1].Config)
	if err != nil {
		d.fail(w, r, s, http.StatusBadRequest, err.Error())
		return
	}
	body, _ := json.Marshal(cfg)
	res, err := d.api.do(r.Context(), d.api.api, http.MethodPost, "http://control/v1/apps/"+url.PathEscape(name)+"/revisions",
		http.Header{"Authorization": {"Bearer " + s.token}, "Content-Type": {"application/json"}, "Accept": {"application/x-ndjson"}}, bytes.NewReader(body))
	if err != nil {
		d.apiFail(w, r, s, err)
		return
	}
	defer res.Body.Close()
	streaming := strings.Contains(r.Header.Get("Accept"), "application/x-ndjson")
	if streaming {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Accel-Buffering", "no")
	}
	rc := http.NewResponseController(w)
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var last controlplane.DeployEvent
	for sc.Scan() {
		if streaming {
			if _, err := w.Write(append(sc.Bytes(), '\n')); err != nil {
				return
			}
			_ = rc.Flush()
			continue
		}
		last = controlplane.DeployEvent{}
		_ = json.Unmarshal(sc.Bytes(), &last)
	}
	if err := sc.Err(); err != nil && last.Result == nil {
		last = controlplane.DeployEvent{Error: "the deploy's answer broke off: " + err.Error()}
		if streaming {
			b, _ := json.Marshal(last)
			_, _ = w.Write(append(b, '\n'))
			return
		}
	}
	switch {
	case streaming:
	case last.Result != nil:
		http.Redirect(w, r, "/ui/apps/"+url.PathEscape(name)+"?deployed="+url.QueryEscape(last.Result.Revision.Name), http.StatusSeeOther)
	case last.Error != "":
		d.fail(w, r, s, http.StatusBadRequest, last.Error)
	default:
		d.fail(w, r, s, http.StatusBadGateway, "The server ended the deploy without a result.")
	}
}
