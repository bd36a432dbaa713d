package controlplane

import (
	"net/http"
	"time"

	"github.com/berth-dev/berth/app"
	"github.com/berth-dev/berth/internal/httpapi"
)

// AppKeyView is an app's API key as the API shows it: never its value
// or hash.
type AppKeyView struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"createdAt"`
}

// AppKeyCreated is the answer of POST /v1/apps/{name}/keys: the key's
// value, shown this once.
type AppKeyCreated struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

func keyViews(keys []app.APIKey) []AppKeyView {
	var out []AppKeyView
	for _, k := range keys {
		out = append(out, AppKeyView{Name: k.Name, CreatedAt: k.CreatedAt})
	}
	return out
}

func (c *ctl) setAppAuth(w http.ResponseWriter, r *http.Request) error {
	m, err := c.apps()
	if err != nil {
		return err
	}
	var req app.Auth
	if err := httpapi.DecodeJSON(w, r, 64<<10, &req); err != nil {
		return err
	}
	if _, err := m.SetAuth(r.Context(), r.PathValue("name"), req); err != nil {
		return appError(err)
	}
	a, err := m.Get(r.PathValue("name"))
	if err != nil {
		return appError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, c.appView(a))
	return nil
}

func (c *ctl) listAppKeys(w http.ResponseWriter, r *http.Request) error {
	a, err := c.getApp(r)
	if err != nil {
		return err
	}
	out := keyViews(a.Doc().APIKeys)
	if out == nil {
		out = []AppKeyView{}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"value": out})
	return nil
}

func (c *ctl) createAppKey(w http.ResponseWriter, r *http.Request) error {
	m, err := c.apps()
	if err != nil {
		return err
	}
	var req struct {
		Name string `json:"name"`
	}
	if err := httpapi.DecodeJSON(w, r, 4<<10, &req); err != nil {
		return err
	}
	key, err := m.CreateKey(r.Context(), r.PathValue("name"), req.Name)
	if err != nil {
		return appError(err)
	}
	httpapi.WriteJSON(w, http.StatusCreated, AppKeyCreated{Name: req.Name, Key: key})
	return nil
}

func (c *ctl) revokeAppKey(w http.ResponseWriter, r *http.Request) error {
	m, err := c.apps()
	if err != nil {
		return err
	}
	if err := m.RevokeKey(r.Context(), r.PathValue("name"), r.PathValue("key")); err != nil {
		return appError(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
