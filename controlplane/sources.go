package controlplane

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/berth-dev/berth/internal/archive"
	"github.com/berth-dev/berth/internal/httpapi"
	"github.com/berth-dev/berth/source"
)

// sourceRoutes: POST /v1/sources[?digest=sha256:…] takes a gzipped tar
// (201 {"digest","size"}, or 200 if it was there); GET
// /v1/sources/{digest} answers 200 with the same or 404.
func (c *ctl) sourceRoutes(handle func(string, httpapi.HandlerFunc)) {
	handle("POST /v1/sources", c.uploadSource)
	handle("GET /v1/sources/{digest}", c.showSource)
}

func (c *ctl) sources() (*source.Store, error) {
	if c.o.Sources == nil {
		return nil, httpapi.Errorf(http.StatusNotImplemented, "NoSources", "this server does not keep uploaded sources")
	}
	return c.o.Sources, nil
}

func sourceError(err error) error {
	var ae *archive.Error
	switch {
	case errors.Is(err, source.ErrTooLarge):
		return httpapi.Errorf(http.StatusRequestEntityTooLarge, "PayloadTooLarge", err.Error())
	case errors.Is(err, source.ErrNotFound):
		return httpapi.Errorf(http.StatusNotFound, "SourceNotFound", err.Error())
	case errors.Is(err, source.ErrDigest):
		return httpapi.Errorf(http.StatusBadRequest, "DigestMismatch", err.Error())
	case errors.As(err, &ae):
		return httpapi.Errorf(http.StatusBadRequest, "InvalidArchive", err.Error())
	}
	return err
}

func (c *ctl) uploadSource(w http.ResponseWriter, r *http.Request) error {
	s, err := c.sources()
	if err != nil {
		return err
	}
	want := r.URL.Query().Get("digest")
	if want != "" {
		if err := source.ValidDigest(want); err != nil {
			return httpapi.Errorf(http.StatusBadRequest, "InvalidDigest", err.Error())
		}
	}
	if r.ContentLength > s.MaxBytes() {
		return httpapi.Errorf(http.StatusRequestEntityTooLarge, "PayloadTooLarge",
			fmt.Sprintf("the archive is %d bytes, more than this server takes (%d, its --max-upload)", r.ContentLength, s.MaxBytes()))
	}
	info, added, err := s.Put(r.Context(), r.Body, want)
	if err != nil {
		return sourceError(err)
	}
	status := http.StatusOK
	if added {
		status = http.StatusCreated
		c.o.Logger.Info("source uploaded", "digest", info.Digest, "size", info.Size)
	}
	httpapi.WriteJSON(w, status, info)
	return nil
}

func (c *ctl) showSource(w http.ResponseWriter, r *http.Request) error {
	s, err := c.sources()
	if err != nil {
		return err
	}
	info, err := s.Stat(r.PathValue("digest"))
	if err != nil {
		if source.ValidDigest(r.PathValue("digest")) != nil {
			return httpapi.Errorf(http.StatusBadRequest, "InvalidDigest", err.Error())
		}
		return sourceError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, info)
	return nil
}
