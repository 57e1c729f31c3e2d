package aggregate

import (
	"encoding/json"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/cardguard/cardguard/internal/tenant"
)

// maxListed bounds the aggregations one API answer lists.
const maxListed = 1000

// Routes serves GET /aggregations/tenants/{tenant}[?metric=]: the tenant's
// aggregations in force, largest first, with the input and output series at the
// last flush.
func (a *Aggregator) Routes(r chi.Router, requireTenant func(http.Handler) http.Handler) {
	r.With(requireTenant).Get("/aggregations/tenants/{tenant}", a.serveTenant)
}

func (a *Aggregator) serveTenant(w http.ResponseWriter, r *http.Request) {
	tn, err := tenant.Parse(chi.URLParam(r, "tenant"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	in, out := a.TenantSeries(tn)
	list := a.Snapshot(tn, r.URL.Query().Get("metric"), maxListed)
	if list == nil {
		list = []Aggregation{}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(struct {
		Tenant       string        `json:"tenant"`
		InputSeries  int64         `json:"input_series"`
		OutputSeries int64         `json:"output_series"`
		Aggregations []Aggregation `json:"aggregations"`
		// DryRun is what aggregation would fold were the tenant enforcing.
		DryRun DryRunCounts `json:"dry_run"`
	}{tn.String(), in, out, list, a.dry.Counts(tn, a.now())})
}
