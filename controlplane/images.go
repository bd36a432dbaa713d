package controlplane

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/internal/httpapi"
	"github.com/berth-dev/berth/store"
)

// Registries keeps registry logins (the store does).
type Registries interface {
	PutRegistryCredential(ctx context.Context, host, user, password string) error
	DeleteRegistryCredential(ctx context.Context, host string) error
	ListRegistries(ctx context.Context) ([]store.Registry, error)
}

// PullRequest is the body of POST /v1/images/pull.
type PullRequest struct {
	Ref string `json:"ref"`
	// Username and Password, if set, log in for this pull only.
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
}

// PullEvent is one line of the NDJSON answer to a pull: progress lines,
// then one line with the image or an error.
type PullEvent struct {
	Progress *image.Progress `json:"progress,omitempty"`
	Image    *image.Image    `json:"image,omitempty"`
	Error    string          `json:"error,omitempty"`
}

// PruneResult is the answer to POST /v1/images/prune.
type PruneResult struct {
	FreedBytes int64 `json:"freedBytes"`
}

// LoginRequest is the body of PUT /v1/registries/{host}.
type LoginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

func (c *ctl) imageRoutes(handle func(string, httpapi.HandlerFunc)) {
	if c.o.Images != nil {
		handle("GET /v1/images", c.listImages)
		handle("POST /v1/images/pull", c.pullImage)
		handle("POST /v1/images/prune", c.pruneImages)
	}
	if c.o.Registries != nil {
		handle("GET /v1/registries", c.listRegistries)
		handle("PUT /v1/registries/{host}", c.login)
		handle("DELETE /v1/registries/{host}", c.logout)
	}
}

func (c *ctl) listImages(w http.ResponseWriter, r *http.Request) error {
	ims, err := c.o.Images.List()
	if err != nil {
		return err
	}
	if ims == nil {
		ims = []*image.Image{}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"value": ims})
	return nil
}

func (c *ctl) pullImage(w http.ResponseWriter, r *http.Request) error {
	var req PullRequest
	if err := httpapi.DecodeJSON(w, r, 16<<10, &req); err != nil {
		return err
	}
	if strings.TrimSpace(req.Ref) == "" {
		return httpapi.Errorf(http.StatusBadRequest, "InvalidSetting", "ref: the image to pull, e.g. registry.example:5000/app:1")
	}
	po := image.PullOptions{}
	if req.Username != "" {
		po.Auth = &image.Auth{User: req.Username, Password: req.Password}
	}
	send := httpapi.NDJSON(w)
	w.WriteHeader(http.StatusOK)
	po.Progress = func(p image.Progress) { _ = send(PullEvent{Progress: &p}) }
	im, err := c.o.Images.Pull(r.Context(), req.Ref, po)
	if err != nil {
		c.o.Logger.Warn("image pull failed", "ref", req.Ref, "err", err)
		_ = send(PullEvent{Error: err.Error()})
	} else {
		_ = send(PullEvent{Image: im})
	}
	return nil
}

func (c *ctl) pruneImages(w http.ResponseWriter, r *http.Request) error {
	inUse := c.o.ImageInUse
	if inUse == nil {
		inUse = func(string) bool { return false }
	}
	freed, err := c.o.Images.Prune(r.Context(), inUse)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, PruneResult{FreedBytes: freed})
	return nil
}

func (c *ctl) listRegistries(w http.ResponseWriter, r *http.Request) error {
	regs, err := c.o.Registries.ListRegistries(r.Context())
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"value": regs})
	return nil
}

// validHost accepts host[:port] as image references name registries.
func validHost(h string) error {
	if h == "" || strings.ContainsAny(h, "/@ \t") || strings.Contains(h, "://") {
		return httpapi.Errorf(http.StatusBadRequest, "InvalidSetting", "registry host: host or host:port, as in image references (e.g. registry.example:5000), got "+strings.TrimSpace(h))
	}
	return nil
}

func (c *ctl) login(w http.ResponseWriter, r *http.Request) error {
	host := r.PathValue("host")
	if err := validHost(host); err != nil {
		return err
	}
	var req LoginRequest
	if err := httpapi.DecodeJSON(w, r, 16<<10, &req); err != nil {
		return err
	}
	if req.Username == "" || req.Password == "" {
		return httpapi.Errorf(http.StatusBadRequest, "InvalidSetting", "registry login needs a username and a password")
	}
	if err := c.o.Registries.PutRegistryCredential(r.Context(), host, req.Username, req.Password); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, store.Registry{Host: host, Username: req.Username})
	return nil
}

func (c *ctl) logout(w http.ResponseWriter, r *http.Request) error {
	host := r.PathValue("host")
	err := c.o.Registries.DeleteRegistryCredential(r.Context(), host)
	if errors.Is(err, store.ErrNotFound) {
		return httpapi.Errorf(http.StatusNotFound, "RegistryNotFound", "no login stored for registry "+host)
	}
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
