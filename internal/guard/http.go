package guard

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/cardguard/cardguard/internal/tenant"
)

type tenantResponse struct {
	Tenant       tenant.ID     `json:"tenant"`
	GuardedCount int           `json:"guarded_count"`
	TrackedPairs int           `json:"tracked_pairs"`
	Guarded      []GuardedPair `json:"guarded"`
	Now          time.Time     `json:"now"`
}

// Routes mounts GET /guard/tenants/{tenant}: the tenant's guarded pairs as
// JSON. requireTenant guards access (auth.RequireTenant("tenant")).
func (g *Guard) Routes(r chi.Router, requireTenant func(http.Handler) http.Handler) {
	r.With(requireTenant).Get("/guard/tenants/{tenant}", g.serveTenant)
}

func (g *Guard) serveTenant(w http.ResponseWriter, r *http.Request) {
	tn, err := tenant.Parse(chi.URLParam(r, "tenant"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	pairs := g.Guarded(tn)
	if pairs == nil {
		pairs = []GuardedPair{}
	}
	resp := tenantResponse{
		Tenant:       tn,
		GuardedCount: len(pairs),
		TrackedPairs: g.TrackedPairs(tn),
		Guarded:      pairs,
		Now:          g.now().UTC(),
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}
