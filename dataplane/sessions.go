package dataplane

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
	"time"

	"github.com/berth-dev/berth/internal/httpapi"
	"github.com/berth-dev/berth/pool"
)

// SessionResource is a session as 2024-10-02-preview and later describe it.
type SessionResource struct {
	Identifier     string    `json:"identifier"`
	CreatedAt      time.Time `json:"createdAt"`
	LastAccessedAt time.Time `json:"lastAccessedAt"`
	ExpireAt       time.Time `json:"expireAt"`
	// Etag changes when the identifier gets a new sandbox.
	Etag string `json:"etag"`
}

func sessionResource(s pool.SessionInfo) SessionResource {
	h := sha256.Sum256([]byte(s.Identifier + "\x00" + strconv.FormatInt(s.CreatedAt.UnixNano(), 10)))
	return SessionResource{Identifier: s.Identifier, CreatedAt: s.CreatedAt, LastAccessedAt: s.LastActiveAt,
		ExpireAt: s.ExpiresAt, Etag: hex.EncodeToString(h[:16])}
}

func identifierOf(r *http.Request) (string, error) {
	id := r.URL.Query().Get("identifier")
	if id == "" {
		return "", httpapi.Errorf(http.StatusBadRequest, "MissingIdentifier", "the identifier query parameter is required (?identifier=SESSION_ID)")
	}
	return id, pool.ValidIdentifier(id)
}

// getSession is GET …/session?identifier=ID: the session, without
// creating it (404 if it does not exist).
func (a *api) getSession(w http.ResponseWriter, r *http.Request) error {
	p, err := a.authorize(r)
	if err != nil {
		return err
	}
	id, err := identifierOf(r)
	if err != nil {
		return err
	}
	for _, s := range p.Sessions() {
		if s.Identifier == id {
			httpapi.WriteJSON(w, http.StatusOK, sessionResource(s))
			return nil
		}
	}
	_, err = p.Lookup(id)
	return err
}

// endSession is DELETE …/session?identifier=ID (LangChain's tools call it
// on close): 204, or 404 for no such session.
func (a *api) endSession(w http.ResponseWriter, r *http.Request) error {
	p, err := a.authorize(r)
	if err != nil {
		return err
	}
	id, err := identifierOf(r)
	if err != nil {
		return err
	}
	if err := p.DeleteSession(id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// listSessionsV2 is GET …/listSessions: {"sessions":[…]}.
func (a *api) listSessionsV2(w http.ResponseWriter, r *http.Request) error {
	p, err := a.authorize(r)
	if err != nil {
		return err
	}
	list := p.Sessions()
	out := make([]SessionResource, 0, len(list))
	for _, s := range list {
		out = append(out, sessionResource(s))
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"sessions": out})
	return nil
}

// Metadata is GET …/metadata (SessionPoolMetadataResponse).
type Metadata struct {
	Runtimes             []NameVersion `json:"runtimes"`
	PreInstalledPackages []NameVersion `json:"preInstalledPackages"`
	CreatedAt            time.Time     `json:"createdAt"`
	LastUpdatedAt        time.Time     `json:"lastUpdatedAt"`
	JupyterKernel        JupyterKernel `json:"jupyterKernel"`
}

// NameVersion names a runtime or a package.
type NameVersion struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// JupyterKernel describes what runs the pool's code.
type JupyterKernel struct {
	Name        string `json:"name"`
	Version     string `json:"version"`
	ProjectURL  string `json:"projectUrl"`
	Description string `json:"description"`
}

func (a *api) metadata(w http.ResponseWriter, r *http.Request) error {
	p, err := a.authorize(r)
	if err != nil {
		return err
	}
	m := Metadata{Runtimes: []NameVersion{{Name: "bash", Version: ""}}, PreInstalledPackages: []NameVersion{},
		CreatedAt: p.Created().UTC(), LastUpdatedAt: p.Created().UTC(),
		JupyterKernel: JupyterKernel{Name: "berth-shell", ProjectURL: "https://github.com/berth-dev/berth",
			Description: "a persistent bash per session: cwd, variables and functions carry over between executions"}}
	if p.Config().Type == pool.TypePython {
		m.Runtimes = []NameVersion{{Name: "python3"}}
		m.JupyterKernel.Name = "berth-python"
		m.JupyterKernel.Description = "a persistent Python interpreter per session: the value of a trailing expression is the result"
	}
	httpapi.WriteJSON(w, http.StatusOK, m)
	return nil
}
