package cardinality

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/cardguard/cardguard/internal/tenant"
)

const (
	defaultLimit  = 20
	defaultLabels = 5
	maxLimit      = 10000
	defaultTopN   = 10 // as VictoriaMetrics
	maxTopN       = 1000
)

// Routes mounts the read API on r, relative to it:
//
//	GET /cardinality/tenants
//	GET /cardinality/tenants/{tenant}/metrics?limit=N&labels=K
//	GET /cardinality/tenants/{tenant}/metrics/{metric}
//	GET /cardinality/tenants/{tenant}/labels?limit=N
//	GET /cardinality/tenants/{tenant}/status/tsdb?topN=N
//
// requireTenant guards every {tenant} route; the tenant list is not guarded here, so
// mount r behind admin auth or wrap it yourself.
func (t *Tracker) Routes(r chi.Router, requireTenant func(http.Handler) http.Handler) {
	r.Get("/cardinality/tenants", t.handleTenants)
	r.Route("/cardinality/tenants/{tenant}", func(r chi.Router) {
		r.Use(requireTenant)
		r.Get("/metrics", t.handleMetrics)
		r.Get("/metrics/{metric}", t.handleMetric)
		r.Get("/labels", t.handleLabels)
		r.Get("/status/tsdb", t.handleTSDBStatus)
	})
}

// TenantsResponse is the body of GET /cardinality/tenants.
type TenantsResponse struct {
	UpdatedAt          time.Time       `json:"updatedAt"`
	WindowSeconds      int64           `json:"windowSeconds"`
	ChurnWindowSeconds int64           `json:"churnWindowSeconds"`
	Tenants            []TenantSummary `json:"tenants"`
}

// MetricsResponse is the body of GET /cardinality/tenants/{tenant}/metrics.
type MetricsResponse struct {
	UpdatedAt time.Time       `json:"updatedAt"`
	Tenant    TenantSummary   `json:"tenant"`
	Metrics   []MetricSummary `json:"metrics"`
}

// MetricResponse is the body of GET /cardinality/tenants/{tenant}/metrics/{metric}.
type MetricResponse struct {
	UpdatedAt time.Time     `json:"updatedAt"`
	Tenant    string        `json:"tenant"`
	Metric    MetricSummary `json:"metric"`
}

// LabelsResponse is the body of GET /cardinality/tenants/{tenant}/labels.
type LabelsResponse struct {
	UpdatedAt time.Time      `json:"updatedAt"`
	Tenant    TenantSummary  `json:"tenant"`
	Labels    []LabelSummary `json:"labels"`
}

// TSDBStatusResponse has the shape of VictoriaMetrics' /api/v1/status/tsdb.
type TSDBStatusResponse struct {
	Status string     `json:"status"`
	Data   TSDBStatus `json:"data"`
}

// TSDBStatus is the data of TSDBStatusResponse. SeriesCountByFocusLabelValue and
// SeriesCountByLabelValuePair are always empty: cardguard keeps no sketch per label
// value pair.
type TSDBStatus struct {
	TotalSeries                  int64       `json:"totalSeries"`
	TotalLabelValuePairs         int64       `json:"totalLabelValuePairs"`
	SeriesCountByMetricName      []TSDBEntry `json:"seriesCountByMetricName"`
	SeriesCountByLabelName       []TSDBEntry `json:"seriesCountByLabelName"`
	SeriesCountByFocusLabelValue []TSDBEntry `json:"seriesCountByFocusLabelValue"`
	SeriesCountByLabelValuePair  []TSDBEntry `json:"seriesCountByLabelValuePair"`
	LabelValueCountByLabelName   []TSDBEntry `json:"labelValueCountByLabelName"`
}

// TSDBEntry is one {"name","value"} entry of TSDBStatus.
type TSDBEntry struct {
	Name  string `json:"name"`
	Value int64  `json:"value"`
}

func (t *Tracker) handleTenants(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, TenantsResponse{
		UpdatedAt:          t.UpdatedAt(),
		WindowSeconds:      int64(t.cfg.Window / time.Second),
		ChurnWindowSeconds: int64(t.cfg.ChurnWindow / time.Second),
		Tenants:            t.Tenants(),
	})
}

func (t *Tracker) handleMetrics(w http.ResponseWriter, r *http.Request) {
	tn, ok := tenantParam(w, r)
	if !ok {
		return
	}
	limit, ok := intParam(w, r, "limit", defaultLimit, 1, maxLimit)
	if !ok {
		return
	}
	labels, ok := intParam(w, r, "labels", defaultLabels, 0, maxLimit)
	if !ok {
		return
	}
	sum := t.tenantSummary(tn)
	writeJSON(w, MetricsResponse{
		UpdatedAt: t.UpdatedAt(),
		Tenant:    sum,
		Metrics:   nonNil(t.TopMetrics(tn, limit, labels)),
	})
}

func (t *Tracker) handleMetric(w http.ResponseWriter, r *http.Request) {
	tn, ok := tenantParam(w, r)
	if !ok {
		return
	}
	name := chi.URLParam(r, "metric")
	m, ok := t.Metric(tn, name)
	if !ok {
		writeError(w, http.StatusNotFound, "not_found",
			fmt.Sprintf("metric %q is not tracked for tenant %s", truncate(name), tn))
		return
	}
	writeJSON(w, MetricResponse{UpdatedAt: t.UpdatedAt(), Tenant: tn.String(), Metric: m})
}

func (t *Tracker) handleLabels(w http.ResponseWriter, r *http.Request) {
	tn, ok := tenantParam(w, r)
	if !ok {
		return
	}
	limit, ok := intParam(w, r, "limit", defaultLimit, 1, maxLimit)
	if !ok {
		return
	}
	writeJSON(w, LabelsResponse{
		UpdatedAt: t.UpdatedAt(),
		Tenant:    t.tenantSummary(tn),
		Labels:    nonNil(t.TopLabels(tn, limit)),
	})
}

// handleTSDBStatus answers like VictoriaMetrics' cardinality explorer, over the
// sliding window instead of a day. date, focusLabel and match[] are not supported and
// ignored, as VictoriaMetrics ignores unknown arguments.
func (t *Tracker) handleTSDBStatus(w http.ResponseWriter, r *http.Request) {
	tn, ok := tenantParam(w, r)
	if !ok {
		return
	}
	topN, ok := intParam(w, r, "topN", defaultTopN, 1, maxTopN)
	if !ok {
		return
	}
	writeJSON(w, t.TSDBStatus(tn, topN))
}

// TSDBStatus builds the /api/v1/status/tsdb answer for tn from the cached estimates.
func (t *Tracker) TSDBStatus(tn tenant.ID, topN int) TSDBStatusResponse {
	topN = max(topN, 0)
	st := TSDBStatus{
		SeriesCountByMetricName:      []TSDBEntry{},
		SeriesCountByLabelName:       []TSDBEntry{},
		SeriesCountByFocusLabelValue: []TSDBEntry{},
		SeriesCountByLabelValuePair:  []TSDBEntry{},
		LabelValueCountByLabelName:   []TSDBEntry{},
	}
	if tv := t.view.Load().byID[tn]; tv != nil {
		st.TotalSeries = tv.summary.ActiveSeries
		st.TotalLabelValuePairs = tv.pairs
		for _, mv := range tv.metrics[:min(topN, len(tv.metrics))] {
			st.SeriesCountByMetricName = append(st.SeriesCountByMetricName, TSDBEntry{Name: mv.name, Value: mv.series})
		}
		for _, l := range tv.labels[:min(topN, len(tv.labels))] {
			st.LabelValueCountByLabelName = append(st.LabelValueCountByLabelName, TSDBEntry{Name: l.Name, Value: l.Values})
		}
		for _, l := range tv.bySeries[:min(topN, len(tv.bySeries))] {
			st.SeriesCountByLabelName = append(st.SeriesCountByLabelName, TSDBEntry{Name: l.Name, Value: l.Series})
		}
	}
	return TSDBStatusResponse{Status: "success", Data: st}
}

func (t *Tracker) tenantSummary(tn tenant.ID) TenantSummary {
	if sum, ok := t.Tenant(tn); ok {
		return sum
	}
	return TenantSummary{Tenant: tn.String()}
}

func tenantParam(w http.ResponseWriter, r *http.Request) (tenant.ID, bool) {
	tn, err := tenant.Parse(chi.URLParam(r, "tenant"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_data", err.Error())
		return tenant.ID{}, false
	}
	return tn, true
}

func intParam(w http.ResponseWriter, r *http.Request, name string, def, lo, hi int) (int, bool) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		writeError(w, http.StatusBadRequest, "bad_data",
			fmt.Sprintf("%s=%q: want an integer in [%d, %d]", name, truncate(s), lo, hi))
		return 0, false
	}
	return n, true
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the status is sent; a failed write has nobody to tell
}

// writeError answers in the error shape of the Prometheus and VictoriaMetrics APIs.
func writeError(w http.ResponseWriter, code int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
	}{"error", typ, msg})
}

func truncate(s string) string {
	const limit = 64
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "..."
}
