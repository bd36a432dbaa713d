package controlplane

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/httpapi"
	"github.com/berth-dev/berth/pool"
)

// What the dashboard and "berth events", "berth app metrics" and "berth
// pool sessions" read:
//
//	GET    /v1/events                          (?app=, ?pool=, ?after=SEQ, ?limit=N)
//	GET    /v1/metrics/apps                    (?app=NAME)
//	GET    /v1/pools/{name}/sessions           (?filter=SUBSTRING, ?offset=N, ?limit=N)
//	DELETE /v1/pools/{name}/sessions/{identifier}
func (c *ctl) observeRoutes(handle func(string, httpapi.HandlerFunc)) {
	handle("GET /v1/events", c.events)
	handle("GET /v1/metrics/apps", c.appMetrics)
	handle("GET /v1/pools/{name}/sessions", c.sessions)
	handle("DELETE /v1/pools/{name}/sessions/{identifier}", c.endSession)
}

// event records what the control API changed.
func (c *ctl) event(e events.Event) { c.o.Events.Add(e) }

func (c *ctl) events(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := events.Filter{App: q.Get("app"), Pool: q.Get("pool"), Limit: 200}
	if v := q.Get("limit"); v != "" {
		n, err := atoiParam(v, 0)
		if err != nil {
			return err
		}
		f.Limit = n
	}
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return httpapi.Errorf(http.StatusBadRequest, "InvalidAfter", "after must be an event's seq")
		}
		f.After = n
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"value": c.o.Events.List(f)})
	return nil
}

// SessionView is a pool's live session with what its sandbox uses.
type SessionView struct {
	pool.SessionInfo
	MemoryBytes uint64 `json:"memoryBytes"`
	DiskBytes   int64  `json:"diskBytes"`
	OOMKills    uint64 `json:"oomKills"`
	Processes   int64  `json:"processes"`
	// CPUSeconds is the CPU time the session's sandbox has used;
	// CPURate the cores it used on average lately (since the previous
	// listing at least a second before, or since it started).
	CPUSeconds float64 `json:"cpuSeconds"`
	CPURate    float64 `json:"cpuRate"`
}

func (c *ctl) sessions(w http.ResponseWriter, r *http.Request) error {
	p, err := c.o.Pools.Get(r.PathValue("name"))
	if err != nil {
		return err
	}
	q := r.URL.Query()
	offset, err := atoiParam(q.Get("offset"), 0)
	if err != nil {
		return err
	}
	limit, err := atoiParam(q.Get("limit"), 0)
	if err != nil {
		return err
	}
	infos := p.Sessions()
	if f := q.Get("filter"); f != "" {
		kept := infos[:0]
		for _, si := range infos {
			if strings.Contains(si.Identifier, f) {
				kept = append(kept, si)
			}
		}
		infos = kept
	}
	total := len(infos)
	infos = infos[min(offset, len(infos)):]
	if limit > 0 && len(infos) > limit {
		infos = infos[:limit]
	}
	// Only the sessions returned are measured.
	out := make([]SessionView, 0, len(infos))
	for _, si := range infos {
		v := SessionView{SessionInfo: si}
		if s, err := p.Lookup(si.Identifier); err == nil {
			st := s.Stats()
			v.MemoryBytes, v.DiskBytes, v.OOMKills, v.Processes = st.MemoryBytes, st.DiskBytes, st.OOMKills, st.Pids
			v.CPUSeconds, v.CPURate = st.CPUTime.Seconds(), s.CPURate(st.CPUTime)
		}
		out = append(out, v)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"value": out, "total": total})
	return nil
}

func atoiParam(v string, def int) (int, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, httpapi.Errorf(http.StatusBadRequest, "InvalidParameter", fmt.Sprintf("%q is not a number ≥ 0", v))
	}
	return n, nil
}

func (c *ctl) endSession(w http.ResponseWriter, r *http.Request) error {
	p, err := c.o.Pools.Get(r.PathValue("name"))
	if err != nil {
		return err
	}
	if err := p.DeleteSession(r.PathValue("identifier")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// AppMetrics is what the gateway counted for one app since the server
// started, and over the last hour.
type AppMetrics struct {
	App      string `json:"app"`
	Requests int64  `json:"requests"`
	// Errors are responses with an HTTP status of 400 or more.
	Errors   int64           `json:"errors"`
	LastHour Window          `json:"lastHour"`
	Tools    []ToolMetrics   `json:"tools"`
	Methods  []MethodMetrics `json:"methods"`
}

// Window counts requests over the last WindowSeconds (an hour, or less
// when the server is younger or was not asked an hour ago).
type Window struct {
	WindowSeconds int64 `json:"windowSeconds"`
	Requests      int64 `json:"requests"`
	Errors        int64 `json:"errors"`
}

// ToolMetrics counts an app's tools/call requests to one tool.
type ToolMetrics struct {
	Tool   string `json:"tool"`
	Calls  int64  `json:"calls"`
	Errors int64  `json:"errors"`
}

// MethodMetrics is the latency of one MCP method (tools/call, initialize…)
// over every revision, from the gateway's histogram.
type MethodMetrics struct {
	Method string  `json:"method"`
	Count  int64   `json:"count"`
	P50Ms  float64 `json:"p50Ms"`
	P99Ms  float64 `json:"p99Ms"`
}

// sampler keeps per-minute totals for the last hour's window, taken when
// metrics are asked for (no goroutine of its own).
type sampler struct {
	mu      sync.Mutex
	started time.Time
	samples []sample
}

type sample struct {
	at     time.Time
	totals map[string][2]int64 // app → requests, errors
}

// baseline records now's totals and returns the totals and time to count
// the last hour from.
func (s *sampler) baseline(now time.Time, totals map[string][2]int64) (time.Time, map[string][2]int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.samples); n == 0 || now.Sub(s.samples[n-1].at) >= time.Minute {
		s.samples = append(s.samples, sample{now, totals})
	}
	hourAgo := now.Add(-time.Hour)
	// Drop the samples before the newest one that is an hour old.
	for len(s.samples) > 1 && !s.samples[1].at.After(hourAgo) {
		s.samples = s.samples[1:]
	}
	if !s.started.Before(hourAgo) || len(s.samples) == 0 {
		return s.started, nil // counters were zero at the start
	}
	return s.samples[0].at, s.samples[0].totals
}

func (c *ctl) appMetrics(w http.ResponseWriter, r *http.Request) error {
	if c.o.Metrics == nil {
		return httpapi.Errorf(http.StatusNotImplemented, "NoMetrics", "this server keeps no app metrics")
	}
	fams, err := c.o.Metrics.Gather()
	if err != nil {
		return err
	}
	all := collect(fams)
	now := time.Now()
	totals := map[string][2]int64{}
	for name, m := range all {
		totals[name] = [2]int64{m.Requests, m.Errors}
	}
	since, base := c.sampler.baseline(now, totals)
	out := []AppMetrics{}
	only := r.URL.Query().Get("app")
	names := []string{}
	if c.o.Apps != nil {
		for _, a := range c.o.Apps.List() {
			names = append(names, a.Name())
		}
	}
	for _, name := range names {
		if only != "" && name != only {
			continue
		}
		m := all[name]
		if m == nil {
			m = &AppMetrics{Tools: []ToolMetrics{}, Methods: []MethodMetrics{}}
		}
		m.App = name
		b := base[name]
		m.LastHour = Window{WindowSeconds: int64(now.Sub(since).Seconds()), Requests: m.Requests - b[0], Errors: m.Errors - b[1]}
		out = append(out, *m)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"value": out})
	return nil
}

// collect reads the gateway's request counter and latency histogram.
func collect(fams []*dto.MetricFamily) map[string]*AppMetrics {
	all := map[string]*AppMetrics{}
	get := func(name string) *AppMetrics {
		if all[name] == nil {
			all[name] = &AppMetrics{App: name, Tools: []ToolMetrics{}, Methods: []MethodMetrics{}}
		}
		return all[name]
	}
	tools := map[[2]string]*ToolMetrics{}
	hists := map[[2]string]*histogram{}
	for _, f := range fams {
		switch f.GetName() {
		case "berth_app_requests_total":
			for _, m := range f.GetMetric() {
				l := labels(m)
				n := int64(m.GetCounter().GetValue())
				a := get(l["app"])
				failed := l["code"] >= "400" && len(l["code"]) == 3
				a.Requests += n
				if failed {
					a.Errors += n
				}
				if l["method"] == "tools/call" && l["tool"] != "" {
					k := [2]string{l["app"], l["tool"]}
					if tools[k] == nil {
						tools[k] = &ToolMetrics{Tool: l["tool"]}
					}
					tools[k].Calls += n
					if failed {
						tools[k].Errors += n
					}
				}
			}
		case "berth_app_request_duration_seconds":
			for _, m := range f.GetMetric() {
				l := labels(m)
				k := [2]string{l["app"], l["method"]}
				if hists[k] == nil {
					hists[k] = &histogram{}
				}
				hists[k].add(m.GetHistogram())
			}
		}
	}
	for k, t := range tools {
		a := get(k[0])
		a.Tools = append(a.Tools, *t)
	}
	for k, h := range hists {
		a := get(k[0])
		a.Methods = append(a.Methods, MethodMetrics{Method: k[1], Count: int64(h.count), P50Ms: h.quantile(0.5) * 1000, P99Ms: h.quantile(0.99) * 1000})
	}
	for _, a := range all {
		sort.Slice(a.Tools, func(i, j int) bool { return a.Tools[i].Tool < a.Tools[j].Tool })
		sort.Slice(a.Methods, func(i, j int) bool { return a.Methods[i].Method < a.Methods[j].Method })
	}
	return all
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// histogram sums the buckets of one method's histograms (one per
// revision).
type histogram struct {
	count  uint64
	bounds []float64
	cum    []uint64
}

func (h *histogram) add(p *dto.Histogram) {
	h.count += p.GetSampleCount()
	for i, b := range p.GetBucket() {
		if i >= len(h.bounds) {
			h.bounds = append(h.bounds, b.GetUpperBound())
			h.cum = append(h.cum, 0)
		}
		h.cum[i] += b.GetCumulativeCount()
	}
}

// quantile interpolates linearly within the bucket holding q, as
// Prometheus's histogram_quantile does; past the last bound it returns
// that bound.
func (h *histogram) quantile(q float64) float64 {
	if h.count == 0 {
		return 0
	}
	rank := q * float64(h.count)
	lower, below := 0.0, uint64(0)
	for i, ub := range h.bounds {
		if float64(h.cum[i]) >= rank {
			in := h.cum[i] - below
			if in == 0 {
				return ub
			}
			return lower + (ub-lower)*(rank-float64(below))/float64(in)
		}
		lower, below = ub, h.cum[i]
	}
	if len(h.bounds) == 0 {
		return 0
	}
	return h.bounds[len(h.bounds)-1]
}
