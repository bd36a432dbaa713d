package dataplane

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/internal/httpapi"
	"github.com/berth-dev/berth/pool"
)

// Retention of execution records (GET …/executions/{id}): each holds up
// to 2 MiB of output, so few.
const (
	execRetention  = 10 * time.Minute
	maxExecRecords = 256
)

// ExecutionRequest is the body of POST …/executions (2024-10-02-preview
// on): flat, with code (run by the pool's language) or shellCommand (run
// by bash, as on Azure's shell pools).
type ExecutionRequest struct {
	CodeInputType    string  `json:"codeInputType"`
	ExecutionType    string  `json:"executionType"`
	Code             *string `json:"code"`
	ShellCommand     *string `json:"shellCommand"`
	TimeoutInSeconds int     `json:"timeoutInSeconds"`
}

// Execution is an execution as 2024-10-02-preview and later return it
// (SessionCodeExecutionResource).
//
// Status follows the pool type, as Azure's pools do: a Python pool's is an
// operation state ("Running", "Succeeded", "Failed"), which Semantic
// Kernel reports; a shell execution's (shell pools, and shellCommand on
// any pool) is the command's exit code as a string ("0"), which
// LangChain's SessionsBashTool and deepagents' SessionsBashBackend parse
// with int().
type Execution struct {
	ID            string           `json:"id"`
	Identifier    string           `json:"identifier"`
	ExecutionType string           `json:"executionType"`
	Status        string           `json:"status"`
	Result        *ExecutionOutput `json:"result,omitempty"`
	Error         *ErrorResponse   `json:"error,omitempty"`
}

// ExecutionOutput is an execution's output (SessionCodeExecutionResult).
type ExecutionOutput struct {
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
	// ExecutionResult is a Python execution's trailing value as a string
	// (Semantic Kernel .NET reads it into a string), or null. Always
	// present: clients read it with GetProperty.
	ExecutionResult             *string `json:"executionResult"`
	ExecutionTimeInMilliseconds int64   `json:"executionTimeInMilliseconds"`
	ExitCode                    *int    `json:"exitCode,omitempty"`
	StdoutTruncated             bool    `json:"stdoutTruncated,omitempty"`
	StderrTruncated             bool    `json:"stderrTruncated,omitempty"`
}

// ErrorResponse is Azure's error document, {"error":{"code","message"}}.
type ErrorResponse struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (a *api) executions(w http.ResponseWriter, r *http.Request) error {
	p, err := a.authorize(r)
	if err != nil {
		return err
	}
	var req struct {
		ExecutionRequest
		// Properties is the 2024-02-02-preview wrapper, tolerated here.
		Properties *ExecutionRequest `json:"properties"`
	}
	if err := httpapi.DecodeJSONWithin(w, r, MaxExecuteBody, a.bodies, &req); err != nil {
		return err
	}
	er := req.ExecutionRequest
	if req.Properties != nil {
		er = *req.Properties
	}
	lang, code, err := executionCode(p, er)
	if err != nil {
		return err
	}
	async, err := asynchronous(er.ExecutionType)
	if err != nil {
		return err
	}
	if er.TimeoutInSeconds < 0 {
		return httpapi.Errorf(http.StatusBadRequest, "InvalidTimeout", "timeoutInSeconds must be positive")
	}
	s, err := sessionIn(p, r)
	if err != nil {
		return err
	}
	rec := a.execs.add(p.Name(), s.ID, operationID(r), async)
	setOperationHeaders(w, r, p.Name(), rec)
	opts := pool.ExecOptions{Timeout: time.Duration(er.TimeoutInSeconds) * time.Second}
	if async {
		a.execs.start(rec, lang, func(ctx context.Context) (*pool.Execution, error) {
			return s.Exec(ctx, lang, code, nil, opts)
		})
		httpapi.WriteJSON(w, http.StatusAccepted, rec.view())
		return nil
	}
	st := startStream(w, r)
	opts.OnEvent = st.queue().OnEvent()
	x, err := s.Exec(r.Context(), lang, code, nil, opts)
	if err != nil {
		a.execs.finish(rec, failed(rec, err))
		return a.answer(w, r, st, nil, err)
	}
	a.execs.finish(rec, completed(rec, lang, x))
	return a.answer(w, r, st, rec.view(), nil)
}

// executionCode picks what to run and in which language.
func executionCode(p *pool.Pool, er ExecutionRequest) (agent.Language, string, error) {
	lang, src := poolLanguage(p), er.Code
	if er.ShellCommand != nil {
		if er.Code != nil {
			return "", "", httpapi.Errorf(http.StatusBadRequest, "AmbiguousCode", "send either code or shellCommand, not both")
		}
		lang, src = agent.Shell, er.ShellCommand
	}
	if src == nil {
		return "", "", httpapi.Errorf(http.StatusBadRequest, "MissingCode", `code (or shellCommand) is required: {"codeInputType":"Inline","executionType":"Synchronous","code":"..."}`)
	}
	code, err := decodeCode(er.CodeInputType, *src)
	return lang, code, err
}

// operationID is the client's operation-id header if it is a usable id,
// else a new one.
func operationID(r *http.Request) string {
	if id := r.Header.Get("operation-id"); len(id) >= 1 && len(id) <= 128 && safeID(id) {
		return id
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func safeID(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// setOperationHeaders sets operation-id and Operation-Location (where the
// execution can be polled).
func setOperationHeaders(w http.ResponseWriter, r *http.Request, poolName string, rec *execRecord) {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	q := url.Values{"identifier": {rec.key.identifier}}
	if v := r.URL.Query().Get("api-version"); v != "" {
		q.Set("api-version", v)
	}
	loc := url.URL{Scheme: scheme, Host: r.Host, Path: "/pools/" + poolName + "/executions/" + rec.key.id, RawQuery: q.Encode()}
	w.Header().Set("operation-id", rec.key.id)
	w.Header().Set("Operation-Location", loc.String())
}

func (a *api) getExecution(w http.ResponseWriter, r *http.Request) error {
	p, err := a.authorize(r)
	if err != nil {
		return err
	}
	id := r.URL.Query().Get("identifier")
	if id == "" {
		return httpapi.Errorf(http.StatusBadRequest, "MissingIdentifier", "the identifier query parameter is required (?identifier=SESSION_ID)")
	}
	rec := a.execs.get(p.Name(), id, r.PathValue("id"))
	if rec == nil {
		return httpapi.Errorf(http.StatusNotFound, "ExecutionNotFound", fmt.Sprintf("no execution %q in session %q (records are kept %s)", r.PathValue("id"), id, execRetention))
	}
	httpapi.WriteJSON(w, http.StatusOK, rec.view())
	return nil
}

// completed renders a finished execution.
func completed(rec *execRecord, lang agent.Language, x *pool.Execution) Execution {
	res := rec.base()
	legacy := Result(lang, x)
	out := &ExecutionOutput{Stdout: x.Stdout, Stderr: x.Stderr, ExecutionTimeInMilliseconds: x.DurationMillis,
		ExitCode: legacy.ExitCode, StdoutTruncated: x.StdoutTruncated, StderrTruncated: x.StderrTruncated}
	if lang == agent.Python {
		out.ExecutionResult = resultString(x.Value)
		res.Status = "Succeeded"
		if x.Status != agent.StatusSuccess {
			res.Status = "Failed"
		}
	} else {
		res.Status = strconv.Itoa(x.ExitCode)
	}
	res.Result = out
	if legacy.Error != nil {
		res.Error = &ErrorResponse{}
		res.Error.Error.Code, res.Error.Error.Message = legacy.Error.Type, legacy.Error.Message
	}
	return res
}

// failed renders an execution that could not run.
func failed(rec *execRecord, err error) Execution {
	res := rec.base()
	e := httpapi.Classify(err)
	res.Status = "Failed"
	res.Error = &ErrorResponse{}
	res.Error.Error.Code, res.Error.Error.Message = e.Code, e.Message
	return res
}

// resultString is a Python value as a string: a string as itself, other
// JSON as its text, nothing (None, or no trailing expression) as nil.
func resultString(v json.RawMessage) *string {
	if len(v) == 0 || string(v) == "null" {
		return nil
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		return &s
	}
	t := string(v)
	return &t
}

// executions keeps the executions of the last execRetention for GET
// …/executions/{id}, and owns the goroutines of asynchronous ones.
type executions struct {
	ctx context.Context
	mu  sync.Mutex
	m   map[execKey]*execRecord
}

type execKey struct{ pool, identifier, id string }

type execRecord struct {
	key      execKey
	execType string // "Synchronous" or "Asynchronous"
	done     chan struct{}
	// res is the execution; set before done closes, read-only after.
	res      Execution
	finished time.Time
}

func newExecutions(ctx context.Context) *executions {
	return &executions{ctx: ctx, m: map[execKey]*execRecord{}}
}

// view is the record as it stands: its result once done, else Running.
func (r *execRecord) view() Execution {
	select {
	case <-r.done:
		return r.res
	default:
		x := r.base()
		x.Status = "Running"
		return x
	}
}

// base is the execution without its outcome.
func (r *execRecord) base() Execution {
	return Execution{ID: r.key.id, Identifier: r.key.identifier, ExecutionType: r.execType}
}

func (e *executions) add(poolName, identifier, id string, async bool) *execRecord {
	t := "Synchronous"
	if async {
		t = "Asynchronous"
	}
	rec := &execRecord{key: execKey{poolName, identifier, id}, execType: t, done: make(chan struct{})}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pruneLocked()
	e.m[rec.key] = rec
	return rec
}

// pruneLocked drops records finished more than execRetention ago, and the
// oldest finished ones beyond maxExecRecords.
func (e *executions) pruneLocked() {
	var oldest *execRecord
	for k, r := range e.m {
		if r.finished.IsZero() {
			continue
		}
		if time.Since(r.finished) > execRetention {
			delete(e.m, k)
		} else if oldest == nil || r.finished.Before(oldest.finished) {
			oldest = r
		}
	}
	if len(e.m) >= maxExecRecords && oldest != nil {
		delete(e.m, oldest.key)
	}
}

func (e *executions) get(poolName, identifier, id string) *execRecord {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.m[execKey{poolName, identifier, id}]
}

func (e *executions) finish(rec *execRecord, res Execution) {
	rec.res = res
	e.mu.Lock()
	rec.finished = time.Now()
	e.mu.Unlock()
	close(rec.done)
}

// start runs an asynchronous execution on the server's context (the
// session's timeout bounds it; shutdown destroys its sandbox).
func (e *executions) start(rec *execRecord, lang agent.Language, run func(context.Context) (*pool.Execution, error)) {
	go func() {
		x, err := run(e.ctx)
		if err != nil {
			e.finish(rec, failed(rec, err))
			return
		}
		e.finish(rec, completed(rec, lang, x))
	}()
}
