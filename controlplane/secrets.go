package controlplane

import (
	"net/http"
	"time"

	"github.com/berth-dev/berth/app"
	"github.com/berth-dev/berth/internal/httpapi"
	"github.com/berth-dev/berth/pool"
	"github.com/berth-dev/berth/store"
)

// SecretRequest is the body of PUT /v1/apps/{name}/secrets/{secret}: the
// value, base64 in JSON.
type SecretRequest struct {
	Value []byte `json:"value"`
}

// SecretView is a secret as the API shows it: never its value.
type SecretView struct {
	Name      string    `json:"name"`
	UpdatedAt time.Time `json:"updatedAt,omitzero"`
	// Note says when a change takes effect.
	Note string `json:"note,omitempty"`
}

func (c *ctl) setSecret(w http.ResponseWriter, r *http.Request) error {
	m, err := c.apps()
	if err != nil {
		return err
	}
	var req SecretRequest
	if err := httpapi.DecodeJSON(w, r, 2*app.MaxSecretBytes, &req); err != nil {
		return err
	}
	name, secret := r.PathValue("name"), r.PathValue("secret")
	if err := m.SetSecret(r.Context(), name, secret, req.Value); err != nil {
		return appError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, SecretView{Name: secret, UpdatedAt: time.Now().UTC(), Note: app.SecretApplies(name)})
	return nil
}

func (c *ctl) listSecrets(w http.ResponseWriter, r *http.Request) error {
	m, err := c.apps()
	if err != nil {
		return err
	}
	list, err := m.ListSecrets(r.Context(), r.PathValue("name"))
	if err != nil {
		return appError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string][]store.SecretInfo{"value": list})
	return nil
}

func (c *ctl) deleteSecret(w http.ResponseWriter, r *http.Request) error {
	m, err := c.apps()
	if err != nil {
		return err
	}
	name, secret := r.PathValue("name"), r.PathValue("secret")
	if err := m.DeleteSecret(r.Context(), name, secret); err != nil {
		return appError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, SecretView{Name: secret, Note: app.SecretApplies(name)})
	return nil
}

func (c *ctl) restartApp(w http.ResponseWriter, r *http.Request) error {
	m, err := c.apps()
	if err != nil {
		return err
	}
	if err := m.Restart(r.Context(), r.PathValue("name")); err != nil {
		return appError(err)
	}
	a, err := m.Get(r.PathValue("name"))
	if err != nil {
		return appError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, c.appView(a))
	return nil
}

// poolSecretsNote says when a change to a pool's secret takes effect.
const poolSecretsNote = "the egress proxy reads it at each request: it takes effect at once"

func (c *ctl) setPoolSecret(w http.ResponseWriter, r *http.Request) error {
	var req SecretRequest
	if err := httpapi.DecodeJSON(w, r, 2*pool.MaxSecretBytes, &req); err != nil {
		return err
	}
	secret := r.PathValue("secret")
	if err := c.o.Pools.SetSecret(r.Context(), r.PathValue("name"), secret, req.Value); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, SecretView{Name: secret, UpdatedAt: time.Now().UTC(), Note: poolSecretsNote})
	return nil
}

func (c *ctl) listPoolSecrets(w http.ResponseWriter, r *http.Request) error {
	list, err := c.o.Pools.ListSecrets(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string][]store.SecretInfo{"value": list})
	return nil
}

func (c *ctl) deletePoolSecret(w http.ResponseWriter, r *http.Request) error {
	secret := r.PathValue("secret")
	if err := c.o.Pools.DeleteSecret(r.Context(), r.PathValue("name"), secret); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, SecretView{Name: secret, Note: "requests its inject rules apply to are refused until it is set again"})
	return nil
}
