package limits

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/cardguard/cardguard/internal/tenant"
)

// MaxBodyBytes bounds a limits API request body.
const MaxBodyBytes = 1 << 20

// SeriesEstimator gives the sketch-based estimate of a tenant's active series, shown
// beside the exact count of the series limiter. ok is false when the tenant is unknown.
type SeriesEstimator interface {
	TenantSeries(t tenant.ID) (n int64, ok bool)
}

// API serves the limits API. It is safe for concurrent use.
type API struct {
	reg *Registry
	enf *Enforcer       // nil: no usage
	est SeriesEstimator // nil: no estimate
	qry QueryUsage      // nil: no read-path usage
}

// QueryUsage is the read path's side of a tenant's usage (readpath.Limiter).
type QueryUsage interface {
	// Refusals are the tenant's refused queries by reason, enforced and dry run.
	Refusals(t tenant.ID) (enforced, dryRun map[Reason]int64)
	// InFlight is the tenant's queries holding a max_concurrent_queries slot and
	// those waiting for one.
	InFlight(t tenant.ID) (running, waiting int)
}

// WithQueries adds the read path's usage to GET /limits/{tenant}; q may be nil.
func (a *API) WithQueries(q QueryUsage) *API {
	a.qry = q
	return a
}

// NewAPI returns the API over reg. enf and est may be nil; usage then leaves out what
// they would give.
func NewAPI(reg *Registry, enf *Enforcer, est SeriesEstimator) *API {
	return &API{reg: reg, enf: enf, est: est}
}

// Routes adds the limits endpoints to router (mounted under /api/cardguard/v1):
//
//	GET    /limits           defaults and every override            (admin)
//	GET    /limits/{tenant}  effective limits, overrides and usage  (admin or the tenant)
//	PUT    /limits/{tenant}  replace the tenant's API override      (admin)
//	PATCH  /limits/{tenant}  merge into it (JSON merge patch)       (admin)
//	DELETE /limits/{tenant}  remove it                              (admin)
//
// requireTenant must read the chi URL parameter "tenant", as auth.RequireTenant("tenant").
func (a *API) Routes(router chi.Router, requireAdmin, requireTenant func(http.Handler) http.Handler) {
	router.With(requireAdmin).Get("/limits", a.list)
	router.With(requireTenant).Get("/limits/{tenant}", a.get)
	router.With(requireAdmin).Put("/limits/{tenant}", a.change(a.reg.Replace))
	router.With(requireAdmin).Patch("/limits/{tenant}", a.change(a.reg.Set))
	router.With(requireAdmin).Delete("/limits/{tenant}", a.delete)
}

type listResponse struct {
	Defaults Limits                    `json:"defaults"`
	Tenants  map[tenant.ID]tenantLimit `json:"tenants"`
}

type tenantLimit struct {
	Tenant           tenant.ID       `json:"tenant"`
	Limits           *Limits         `json:"limits"` // effective
	FileOverride     *Limits         `json:"file_override,omitempty"`
	APIOverride      json.RawMessage `json:"api_override,omitempty"`
	APIOverrideError string          `json:"api_override_error,omitempty"`
	Usage            *usage          `json:"usage,omitempty"`
}

type usage struct {
	Series                 seriesUsage      `json:"series"`
	IngestionRate          rateUsage        `json:"ingestion_rate"`
	DiscardedSamples       map[Reason]int64 `json:"discarded_samples"`
	DryRunDiscardedSamples map[Reason]int64 `json:"dry_run_discarded_samples"`
	Queries                *queryUsage      `json:"queries,omitempty"`
}

type queryUsage struct {
	Running              int              `json:"running"`
	Waiting              int              `json:"waiting"`
	MaxConcurrent        int              `json:"max_concurrent"`
	RefusedQueries       map[Reason]int64 `json:"refused_queries"`
	DryRunRefusedQueries map[Reason]int64 `json:"dry_run_refused_queries"`
}

type seriesUsage struct {
	// Active is exact; it is tracked only while max_series or max_series_per_metric
	// is set.
	Active   int    `json:"active"`
	Tracked  bool   `json:"tracked"`
	Estimate *int64 `json:"estimate,omitempty"`
	Limit    int    `json:"limit"`
}

type rateUsage struct {
	SamplesPerSecond float64 `json:"samples_per_second"`
	Limit            float64 `json:"limit"`
	Burst            float64 `json:"burst"`
}

func (a *API) view(t tenant.ID) tenantLimit {
	o, _ := a.reg.Override(t)
	return tenantLimit{
		Tenant: t, Limits: a.reg.For(t),
		FileOverride: o.File, APIOverride: o.API, APIOverrideError: o.APIError,
	}
}

func (a *API) list(w http.ResponseWriter, _ *http.Request) {
	resp := listResponse{Defaults: a.reg.Defaults(), Tenants: map[tenant.ID]tenantLimit{}}
	for t, o := range a.reg.Overrides() {
		resp.Tenants[t] = tenantLimit{
			Tenant: t, Limits: a.reg.For(t),
			FileOverride: o.File, APIOverride: o.API, APIOverrideError: o.APIError,
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	t, ok := urlTenant(w, r)
	if !ok {
		return
	}
	v := a.view(t)
	l := v.Limits
	u := &usage{
		Series:                 seriesUsage{Limit: l.MaxSeries, Tracked: l.MaxSeries > 0 || l.MaxSeriesPerMetric > 0},
		IngestionRate:          rateUsage{Limit: l.IngestionRate},
		DiscardedSamples:       map[Reason]int64{},
		DryRunDiscardedSamples: map[Reason]int64{},
	}
	if l.IngestionRate > 0 {
		u.IngestionRate.Burst = l.Burst()
	}
	if a.enf != nil {
		u.Series.Active = a.enf.SeriesCount(t)
		u.IngestionRate.SamplesPerSecond = a.enf.IngestionRate(t)
		u.DiscardedSamples, u.DryRunDiscardedSamples = a.enf.Discards(t)
	}
	if a.est != nil {
		if n, ok := a.est.TenantSeries(t); ok {
			u.Series.Estimate = &n
		}
	}
	if a.qry != nil {
		q := &queryUsage{MaxConcurrent: l.MaxConcurrentQueries}
		q.Running, q.Waiting = a.qry.InFlight(t)
		q.RefusedQueries, q.DryRunRefusedQueries = a.qry.Refusals(t)
		u.Queries = q
	}
	v.Usage = u
	writeJSON(w, http.StatusOK, v)
}

func (a *API) change(apply func(tenant.ID, json.RawMessage) (Limits, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		t, ok := urlTenant(w, r)
		if !ok {
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				writeError(w, http.StatusRequestEntityTooLarge, &FieldError{Reason: "request body larger than 1048576 bytes"})
				return
			}
			writeError(w, http.StatusBadRequest, &FieldError{Reason: "read body: " + err.Error()})
			return
		}
		if _, err := apply(t, body); err != nil {
			writeChangeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, a.view(t))
	}
}

func (a *API) delete(w http.ResponseWriter, r *http.Request) {
	t, ok := urlTenant(w, r)
	if !ok {
		return
	}
	if _, err := a.reg.Delete(t); err != nil {
		writeChangeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, a.view(t))
}

func urlTenant(w http.ResponseWriter, r *http.Request) (tenant.ID, bool) {
	t, err := tenant.Parse(chi.URLParam(r, "tenant"))
	if err != nil {
		writeError(w, http.StatusBadRequest, &FieldError{Field: "tenant", Reason: err.Error()})
		return tenant.ID{}, false
	}
	return t, true
}

// writeChangeError maps the errors of Registry changes to statuses: the client's
// mistakes are 400, a missing override 404, the store's trouble 500.
func writeChangeError(w http.ResponseWriter, err error) {
	var fe *FieldError
	switch {
	case errors.As(err, &fe):
		writeError(w, http.StatusBadRequest, fe)
	case errors.Is(err, ErrNoOverride):
		writeError(w, http.StatusNotFound, &FieldError{Reason: err.Error()})
	default:
		writeError(w, http.StatusInternalServerError, &FieldError{Reason: err.Error()})
	}
}

type errorBody struct {
	Error  string `json:"error"`
	Field  string `json:"field,omitempty"`
	Reason string `json:"reason"`
}

func writeError(w http.ResponseWriter, status int, fe *FieldError) {
	msg := fe.Reason
	if fe.Field != "" {
		msg = fe.Error()
	}
	writeJSON(w, status, errorBody{Error: msg, Field: fe.Field, Reason: fe.Reason})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the status is out; a broken connection is the client's
}
