// Package dataplane serves the session pools' REST API on the public
// listener, shaped like Azure Container Apps dynamic sessions in each of
// its data-plane API versions (chosen by the api-version query parameter
// where the shapes differ; see version.go):
//
//	POST   /pools/{pool}/code/execute?identifier=ID           (2024-02-02-preview)
//	POST   /pools/{pool}/executions?identifier=ID             (2024-10-02-preview on)
//	GET    /pools/{pool}/executions/{id}?identifier=ID
//	POST   /pools/{pool}/files/upload?identifier=ID           (multipart field "file")
//	POST   /pools/{pool}/files?identifier=ID[&path=DIR]
//	GET    /pools/{pool}/files?identifier=ID[&path=DIR][&recursive=true]
//	GET    /pools/{pool}/files/content/{name}?identifier=ID   (2024-02-02-preview)
//	GET    /pools/{pool}/files/{name}[/content]?identifier=ID
//	DELETE /pools/{pool}/files/{name}?identifier=ID
//	GET    /pools/{pool}/session?identifier=ID, DELETE likewise
//	GET    /pools/{pool}/listSessions, GET /pools/{pool}/metadata
//	GET    /pools/{pool}/sessions, DELETE /pools/{pool}/sessions/{identifier}
//
// Every request carries the pool's API key in x-ms-apikey or as a bearer
// token, which the front door (package edge) checks: this handler is only
// ever served behind an edge.
package dataplane

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"time"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/internal/bodymem"
	"github.com/berth-dev/berth/internal/httpapi"
	"github.com/berth-dev/berth/pool"
)

// Limits of the API.
const (
	MaxExecuteBody = 4 << 20   // an execute request's JSON body
	MaxUploadBytes = 128 << 20 // one uploaded file
	// multipartSlack allows for the multipart framing around a file.
	multipartSlack = 64 << 10
)

// Options configure the handler.
type Options struct {
	Pools  *pool.Manager
	Logger *slog.Logger
	// Bodies is the server-wide budget of request bodies held in memory
	// (an execute's JSON; uploads stream and hold none). Nil: none.
	Bodies *bodymem.Budget
	// Context bounds asynchronous executions, which outlive their
	// request: the server's lifetime (nil: context.Background()).
	Context context.Context
}

// Handler returns the data plane's routes.
func Handler(o Options) http.Handler {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Context == nil {
		o.Context = context.Background()
	}
	a := &api{pools: o.Pools, log: o.Logger, bodies: o.Bodies, execs: newExecutions(o.Context)}
	mux := http.NewServeMux()
	handle := func(pattern string, h httpapi.HandlerFunc) {
		mux.Handle(pattern, httpapi.Handle(a.log, h))
	}
	handle("POST /pools/{pool}/code/execute", a.execute)
	handle("POST /pools/{pool}/executions", a.executions)
	handle("GET /pools/{pool}/executions/{id}", a.getExecution)
	handle("POST /pools/{pool}/files/upload", a.upload)
	handle("POST /pools/{pool}/files", a.uploadFile)
	handle("GET /pools/{pool}/files", a.listFiles)
	handle("GET /pools/{pool}/files/{name...}", a.getFile)
	handle("DELETE /pools/{pool}/files/{name...}", a.deleteFile)
	handle("GET /pools/{pool}/sessions", a.listSessions)
	handle("DELETE /pools/{pool}/sessions/{identifier}", a.deleteSession)
	handle("GET /pools/{pool}/session", a.getSession)
	handle("DELETE /pools/{pool}/session", a.endSession)
	handle("GET /pools/{pool}/listSessions", a.listSessionsV2)
	handle("GET /pools/{pool}/metadata", a.metadata)
	return mux
}

type api struct {
	pools  *pool.Manager
	log    *slog.Logger
	bodies *bodymem.Budget
	execs  *executions
}

// authorize finds the pool named in the path; the edge has checked the
// request's key.
func (a *api) authorize(r *http.Request) (*pool.Pool, error) {
	return a.pools.Get(r.PathValue("pool"))
}

// session authorizes the request and returns the session named by the
// identifier query parameter, creating it if needed.
func (a *api) session(r *http.Request) (*pool.Session, error) {
	p, err := a.authorize(r)
	if err != nil {
		return nil, err
	}
	return sessionIn(p, r)
}

func sessionIn(p *pool.Pool, r *http.Request) (*pool.Session, error) {
	id := r.URL.Query().Get("identifier")
	if id == "" {
		return nil, httpapi.Errorf(http.StatusBadRequest, "MissingIdentifier", "the identifier query parameter is required (?identifier=SESSION_ID)")
	}
	return p.Session(r.Context(), id)
}

// ExecuteRequest is the body of POST …/code/execute.
type ExecuteRequest struct {
	Properties struct {
		CodeInputType string  `json:"codeInputType"`
		ExecutionType string  `json:"executionType"`
		Code          *string `json:"code"`
		// TimeoutInSeconds optionally lowers the pool's execution timeout.
		TimeoutInSeconds int `json:"timeoutInSeconds"`
	} `json:"properties"`
}

// ExecuteResponse is its answer.
type ExecuteResponse struct {
	Properties ExecuteResult `json:"properties"`
}

// ExecuteResult is how an execution went.
type ExecuteResult struct {
	Status                      agent.Status    `json:"status"`
	Stdout                      string          `json:"stdout"`
	Stderr                      string          `json:"stderr"`
	Result                      json.RawMessage `json:"result"`
	ExitCode                    *int            `json:"exitCode,omitempty"`
	ExecutionTimeInMilliseconds int64           `json:"executionTimeInMilliseconds"`
	StdoutTruncated             bool            `json:"stdoutTruncated,omitempty"`
	StderrTruncated             bool            `json:"stderrTruncated,omitempty"`
	Error                       *ExecError      `json:"error,omitempty"`
	// Images holds the figures beyond the one in Result (Berth's
	// extension: Azure returns one).
	Images []ImageResult `json:"images,omitempty"`
}

// ImageResult is a figure, as Azure's code interpreter returns one in
// result.
type ImageResult struct {
	Type       string `json:"type"`   // "image"
	Format     string `json:"format"` // "png"
	Base64Data []byte `json:"base64_data"`
}

// Images returns the figures of an execution that are what they claim
// to be (PNG, within the agent's bounds), in order.
func Images(x *pool.Execution) []ImageResult {
	var out []ImageResult
	total := 0
	for _, im := range x.Images {
		if im.Format != "png" || !bytes.HasPrefix(im.Data, pngSignature) {
			continue
		}
		if len(out) == agent.MaxImages || total+len(im.Data) > agent.MaxImageBytes {
			break
		}
		total += len(im.Data)
		out = append(out, ImageResult{Type: "image", Format: im.Format, Base64Data: im.Data})
	}
	return out
}

var pngSignature = []byte("\x89PNG\r\n\x1a\n")

// ExecError explains a failed execution beyond its exit code.
type ExecError struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

func (a *api) execute(w http.ResponseWriter, r *http.Request) error {
	p, err := a.authorize(r)
	if err != nil {
		return err
	}
	var req ExecuteRequest
	if err := httpapi.DecodeJSONWithin(w, r, MaxExecuteBody, a.bodies, &req); err != nil {
		return err
	}
	pr := req.Properties
	if pr.Code == nil {
		return httpapi.Errorf(http.StatusBadRequest, "MissingCode", `properties.code is required: {"properties":{"codeInputType":"inline","executionType":"synchronous","code":"..."}}`)
	}
	code, err := decodeCode(pr.CodeInputType, *pr.Code)
	if err != nil {
		return err
	}
	if async, err := asynchronous(pr.ExecutionType); err != nil {
		return err
	} else if async {
		return httpapi.Errorf(http.StatusBadRequest, "UnsupportedExecutionType", "asynchronous executions need api-version=2024-10-02-preview or later and POST …/executions; code/execute is synchronous")
	}
	if pr.TimeoutInSeconds < 0 {
		return httpapi.Errorf(http.StatusBadRequest, "InvalidTimeout", "timeoutInSeconds must be positive")
	}
	s, err := sessionIn(p, r)
	if err != nil {
		return err
	}
	lang := poolLanguage(p)
	st := startStream(w, r)
	x, err := s.Exec(r.Context(), lang, code, nil, pool.ExecOptions{Timeout: time.Duration(pr.TimeoutInSeconds) * time.Second,
		OnEvent: st.queue().OnEvent()})
	var res any
	if err == nil {
		res = ExecuteResponse{Properties: Result(lang, x)}
	}
	return a.answer(w, r, st, res, err)
}

// Result renders an execution for the API.
func Result(lang agent.Language, x *pool.Execution) ExecuteResult {
	res := ExecuteResult{
		Status: x.Status, Stdout: x.Stdout, Stderr: x.Stderr, Result: x.Value,
		ExecutionTimeInMilliseconds: x.DurationMillis,
		StdoutTruncated:             x.StdoutTruncated, StderrTruncated: x.StderrTruncated,
	}
	if len(res.Result) == 0 {
		res.Result = json.RawMessage("null")
	}
	// A figure is the result when the code has no trailing value, as in
	// Azure: {"type":"image","format":"png","base64_data":"…"}.
	res.Images = Images(x)
	if len(res.Images) > 0 && string(res.Result) == "null" {
		b, _ := json.Marshal(res.Images[0])
		res.Result, res.Images = b, res.Images[1:]
	}
	if lang != agent.Python {
		code := x.ExitCode
		res.ExitCode = &code
	}
	switch {
	case x.OOMKilled:
		res.Error = &ExecError{Type: "OutOfMemory", Message: x.Error}
	case x.ProcessLimit:
		res.Error = &ExecError{Type: "ProcessLimit", Message: x.Error}
	case x.DiskFull:
		res.Error = &ExecError{Type: "DiskFull", Message: x.Error}
	case x.Status == agent.StatusTimeout:
		res.Error = &ExecError{Type: "Timeout", Message: x.Error}
	case x.Error != "":
		res.Error = &ExecError{Type: "ExecutionError", Message: x.Error}
	}
	if x.StateReset && res.Error != nil {
		res.Error.Message += " (the session's interpreter was restarted: earlier variables are gone)"
	}
	return res
}

// FileProperties describes a file, as Azure does.
type FileProperties struct {
	Filename         string    `json:"filename"`
	Size             int64     `json:"size"`
	LastModifiedTime time.Time `json:"lastModifiedTime"`
	Type             string    `json:"type,omitempty"`
}

type fileEntry struct {
	Properties FileProperties `json:"properties"`
}

func fileProps(f agent.FileInfo) fileEntry {
	t := "file"
	if f.IsDir {
		t = "directory"
	}
	return fileEntry{Properties: FileProperties{Filename: f.Name, Size: f.Size, LastModifiedTime: f.ModTime, Type: t}}
}

func (a *api) upload(w http.ResponseWriter, r *http.Request) error {
	info, _, err := a.receive(w, r)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"value": []fileEntry{fileProps(info)}})
	return nil
}

// receive stores the "file" part of a multipart upload in the request's
// session, and returns it with its name relative to /mnt/data.
func (a *api) receive(w http.ResponseWriter, r *http.Request) (agent.FileInfo, string, error) {
	p, err := a.authorize(r)
	if err != nil {
		return agent.FileInfo{}, "", err
	}
	if r.ContentLength > MaxUploadBytes+multipartSlack {
		return agent.FileInfo{}, "", tooLarge()
	}
	mr, err := multipartBody(w, r)
	if err != nil {
		return agent.FileInfo{}, "", err
	}
	s, err := sessionIn(p, r)
	if err != nil {
		return agent.FileInfo{}, "", err
	}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return agent.FileInfo{}, "", httpapi.Errorf(http.StatusBadRequest, "MissingFile", "the multipart body has no field named \"file\"")
		}
		if err != nil {
			return agent.FileInfo{}, "", uploadError(err)
		}
		if part.FormName() != "file" {
			continue
		}
		// Not part.FileName(): it silently drops directories, and a name
		// that tries to climb out of the workspace deserves a 400.
		_, disp, _ := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
		if disp["filename"] == "" {
			return agent.FileInfo{}, "", httpapi.Errorf(http.StatusBadRequest, "MissingFileName", "the \"file\" part has no filename")
		}
		name, err := resolveName(r.URL.Query().Get("path"), disp["filename"])
		if err != nil {
			return agent.FileInfo{}, "", err
		}
		lr := &limitedReader{r: part, n: MaxUploadBytes}
		info, err := s.WriteFile(r.Context(), name, lr)
		if lr.exceeded {
			return agent.FileInfo{}, "", tooLarge()
		}
		if err != nil {
			return agent.FileInfo{}, "", uploadError(err)
		}
		return info, name, nil
	}
}

func tooLarge() error {
	return httpapi.Errorf(http.StatusRequestEntityTooLarge, "FileTooLarge", fmt.Sprintf("files are limited to %d MiB", MaxUploadBytes>>20))
}

func uploadError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return tooLarge()
	}
	return err
}

// limitedReader fails once more than n bytes are read, so an oversized
// upload is refused rather than silently cut.
type limitedReader struct {
	r        io.Reader
	n        int64
	exceeded bool
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if int64(len(p)) > l.n+1 {
		p = p[:l.n+1]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	if l.n < 0 {
		l.exceeded = true
		return 0, errors.New("file too large")
	}
	return n, err
}

func (a *api) listSessions(w http.ResponseWriter, r *http.Request) error {
	p, err := a.authorize(r)
	if err != nil {
		return err
	}
	type entry struct {
		Properties pool.SessionInfo `json:"properties"`
	}
	sessions := p.Sessions()
	out := make([]entry, 0, len(sessions))
	for _, s := range sessions {
		out = append(out, entry{s})
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"value": out})
	return nil
}

func (a *api) deleteSession(w http.ResponseWriter, r *http.Request) error {
	p, err := a.authorize(r)
	if err != nil {
		return err
	}
	if err := p.DeleteSession(r.PathValue("identifier")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
