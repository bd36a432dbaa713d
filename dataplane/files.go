package dataplane

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/internal/httpapi"
	"github.com/berth-dev/berth/pool"
)

// Bounds of a recursive listing.
const (
	maxListEntries = 10000
	maxListDepth   = 32
)

// ResourceFile is a file or directory as 2024-10-02-preview and later
// describe it (SessionResourceFile).
type ResourceFile struct {
	Name           string    `json:"name"`
	Type           string    `json:"type"`
	ContentType    string    `json:"contentType"`
	SizeInBytes    int64     `json:"sizeInBytes"`
	LastModifiedAt time.Time `json:"lastModifiedAt"`
	// Directory is the entry's directory relative to the listed one
	// (recursive listings), or relative to /mnt/data (single files).
	Directory string `json:"directory"`
}

func resourceFile(f agent.FileInfo, dir string) ResourceFile {
	rf := ResourceFile{Name: path.Base(f.Name), Type: "file", SizeInBytes: f.Size, LastModifiedAt: f.ModTime.UTC(),
		Directory: dir, ContentType: "application/octet-stream"}
	if f.IsDir {
		rf.Type = "directory"
	} else if ct := mime.TypeByExtension(path.Ext(f.Name)); ct != "" {
		rf.ContentType = ct
	}
	return rf
}

// mountPrefix is where a session's files live; clients send names and
// paths relative to it or absolute under it (LlamaIndex and Semantic
// Kernel upload "/mnt/data/NAME"; LangChain's Bash tool passes
// path=/mnt/data).
const mountPrefix = "/mnt/data"

// trimMount makes a client's path relative to /mnt/data: "/", "/mnt/data"
// and "/mnt/data/" are the workspace itself (""). A name that starts with
// "mnt/data/" is read as "/mnt/data/…" that lost its slash: LangChain
// quote()s "/mnt/data/x" into "files//mnt/data/x/content", and the
// router's path cleaning redirects that to "files/mnt/data/x/content".
func trimMount(p string) string {
	switch {
	case p == "/" || p == mountPrefix || p == mountPrefix+"/":
		return ""
	case strings.HasPrefix(p, mountPrefix+"/"):
		return strings.TrimLeft(p[len(mountPrefix):], "/")
	case strings.HasPrefix(p, mountPrefix[1:]+"/"):
		return strings.TrimLeft(p[len(mountPrefix)-1:], "/")
	}
	return p
}

// resolveName joins a path query parameter and a file name into a name
// relative to /mnt/data, refusing names that leave it (400).
func resolveName(dir, name string) (string, error) {
	name = trimMount(name)
	if dir = trimMount(dir); dir != "" && name != "" {
		name = path.Join(dir, name)
	}
	clean, err := agent.CleanName(name)
	if err != nil {
		return "", httpapi.Errorf(http.StatusBadRequest, "InvalidFileName", err.Error())
	}
	return clean, nil
}

// listDir is the directory a listing names (path=…), "" for /mnt/data.
func listDir(r *http.Request) (string, error) {
	dir := trimMount(r.URL.Query().Get("path"))
	if dir == "" {
		return "", nil
	}
	clean, err := agent.CleanName(dir)
	if err != nil {
		return "", httpapi.Errorf(http.StatusBadRequest, "InvalidPath", err.Error())
	}
	return clean, nil
}

// multipartBody reads the request as multipart/form-data. A body that
// starts with a multipart delimiter line is read as multipart whatever its
// Content-Type says: Semantic Kernel Python sends later uploads with the
// Content-Type: application/json its client keeps from an execution, and
// Azure accepts them.
func multipartBody(w http.ResponseWriter, r *http.Request) (*multipart.Reader, error) {
	body := http.MaxBytesReader(w, r.Body, MaxUploadBytes+multipartSlack)
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err == nil && mt == "multipart/form-data" && params["boundary"] != "" {
		return multipart.NewReader(body, params["boundary"]), nil
	}
	br := bufio.NewReaderSize(body, 512)
	head, _ := br.Peek(80)
	if b, ok := sniffBoundary(head); ok {
		return multipart.NewReader(br, b), nil
	}
	return nil, httpapi.Errorf(http.StatusBadRequest, "NotMultipart", "upload a file as multipart/form-data with the field name \"file\"")
}

// sniffBoundary reads the boundary from a multipart body's first line,
// "--BOUNDARY\r\n" (RFC 2046: 1 to 70 characters).
func sniffBoundary(head []byte) (string, bool) {
	line, _, ok := bytes.Cut(head, []byte("\r\n"))
	if !ok || !bytes.HasPrefix(line, []byte("--")) {
		return "", false
	}
	b := strings.TrimRight(string(line[2:]), " \t")
	if b == "" || len(b) > 70 {
		return "", false
	}
	for _, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("'()+_,-./:=? ", c)) {
			return "", false
		}
	}
	return b, true
}

// uploadFile is POST …/files (2024-10-02-preview on): one SessionResourceFile.
func (a *api) uploadFile(w http.ResponseWriter, r *http.Request) error {
	info, name, err := a.receive(w, r)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, resourceFile(info, dirOf(name)))
	return nil
}

// dirOf is the directory of a name relative to /mnt/data ("" at its top).
func dirOf(name string) string {
	if d := path.Dir(name); d != "." {
		return d
	}
	return ""
}

func (a *api) listFiles(w http.ResponseWriter, r *http.Request) error {
	s, err := a.session(r)
	if err != nil {
		return err
	}
	dir, err := listDir(r)
	if err != nil {
		return err
	}
	if legacy(r) {
		list, err := s.ListFiles(r.Context(), dir)
		if err != nil {
			return err
		}
		out := make([]fileEntry, 0, len(list))
		for _, f := range list {
			out = append(out, fileProps(f))
		}
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"value": out})
		return nil
	}
	recursive, _ := strconv.ParseBool(r.URL.Query().Get("recursive"))
	out, err := walk(r, s, dir, recursive)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"value": out, "nextLink": nil})
	return nil
}

// walk lists dir, and with recursive its subdirectories (not through
// symlinks), breadth first and bounded.
func walk(r *http.Request, s *pool.Session, dir string, recursive bool) ([]ResourceFile, error) {
	type level struct {
		rel   string
		depth int
	}
	out := []ResourceFile{}
	queue := []level{{}}
	for len(queue) > 0 {
		l := queue[0]
		queue = queue[1:]
		list, err := s.ListFiles(r.Context(), path.Join(dir, l.rel))
		if err != nil {
			if l.rel != "" && errors.Is(err, agent.ErrNotFound) {
				continue // removed while we walked
			}
			return nil, err
		}
		for _, f := range list {
			out = append(out, resourceFile(f, l.rel))
			if recursive && f.IsDir && !f.Symlink && l.depth < maxListDepth {
				queue = append(queue, level{path.Join(l.rel, path.Base(f.Name)), l.depth + 1})
			}
			if len(out) >= maxListEntries {
				return out, nil
			}
		}
	}
	return out, nil
}

// getFile serves GET …/files/{name}/content and, in 2024-02-02-preview,
// …/files/content/{name} (the bytes), and GET …/files/{name} (the
// metadata). Names arrive escaped (%2F) or not; the mux unescapes them.
func (a *api) getFile(w http.ResponseWriter, r *http.Request) error {
	rest := r.PathValue("name")
	if after, ok := strings.CutPrefix(rest, "content/"); ok && legacy(r) {
		return a.download(w, r, after)
	}
	if before, ok := strings.CutSuffix(rest, "/content"); ok {
		return a.download(w, r, before)
	}
	return a.fileMetadata(w, r, rest)
}

// fileRequest authorizes a request on one file and returns its session and
// the file's name (checked before any session is created).
func (a *api) fileRequest(r *http.Request, raw string) (*pool.Session, string, error) {
	p, err := a.authorize(r)
	if err != nil {
		return nil, "", err
	}
	name, err := resolveName(r.URL.Query().Get("path"), raw)
	if err != nil {
		return nil, "", err
	}
	s, err := sessionIn(p, r)
	return s, name, err
}

func (a *api) download(w http.ResponseWriter, r *http.Request, raw string) error {
	s, name, err := a.fileRequest(r, raw)
	if err != nil {
		return err
	}
	rc, size, err := s.OpenFile(r.Context(), name)
	if err != nil {
		return err
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(name)}))
	if size >= 0 {
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	}
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, rc)
	return nil
}

func (a *api) fileMetadata(w http.ResponseWriter, r *http.Request, raw string) error {
	s, name, err := a.fileRequest(r, raw)
	if err != nil {
		return err
	}
	list, err := s.ListFiles(r.Context(), dirOf(name))
	if err != nil {
		return err
	}
	for _, f := range list {
		if path.Base(f.Name) == path.Base(name) {
			if legacy(r) {
				httpapi.WriteJSON(w, http.StatusOK, fileProps(f))
			} else {
				httpapi.WriteJSON(w, http.StatusOK, resourceFile(f, dirOf(name)))
			}
			return nil
		}
	}
	return httpapi.Errorf(http.StatusNotFound, "FileNotFound", "no file "+strconv.Quote(name)+" in the session's /mnt/data")
}

func (a *api) deleteFile(w http.ResponseWriter, r *http.Request) error {
	s, name, err := a.fileRequest(r, r.PathValue("name"))
	if err != nil {
		return err
	}
	if err := s.RemoveFile(r.Context(), name); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
