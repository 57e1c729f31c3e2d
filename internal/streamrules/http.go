package streamrules

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sort"

	"github.com/go-chi/chi/v5"

	"github.com/cardguard/cardguard/internal/tenant"
)

// MaxBodyBytes bounds a rule list sent to the API.
const MaxBodyBytes = 1 << 20

// Routes adds the aggregation rules API to router (under /api/cardguard/v1).
// Bodies are rule lists as a vmagent -streamAggr.config file holds them, in
// YAML or JSON; GET answers them as they were sent.
//
//	GET    /aggregate                  where every list comes from      (admin)
//	GET    /aggregate/global           the global rules in force        (admin)
//	PUT    /aggregate/global           replace them                     (admin)
//	DELETE /aggregate/global           back to the file's               (admin)
//	GET    /aggregate/tenants/{tenant} the tenant's own rules in force  (admin or the tenant)
//	PUT    /aggregate/tenants/{tenant} replace them                     (admin)
//	DELETE /aggregate/tenants/{tenant} back to the file's               (admin)
//	GET    /aggregate/tenants/{tenant}/usage[?metric=]  what each rule takes,
//	       per metric: input and output series in the window (admin or the tenant)
//
// requireTenant must read the chi URL parameter "tenant".
func (r *Rules) Routes(router chi.Router, requireAdmin, requireTenant func(http.Handler) http.Handler) {
	router.With(requireAdmin).Get("/aggregate", r.serveList)
	router.With(requireAdmin).Get("/aggregate/global", r.serveGet(globalKey))
	router.With(requireAdmin).Put("/aggregate/global", r.servePut(globalKey))
	router.With(requireAdmin).Delete("/aggregate/global", r.serveDelete(globalKey))
	router.With(requireTenant).Get("/aggregate/tenants/{tenant}", r.serveGet(tenantKey))
	router.With(requireTenant).Get("/aggregate/tenants/{tenant}/usage", r.serveUsage)
	router.With(requireAdmin).Put("/aggregate/tenants/{tenant}", r.servePut(tenantKey))
	router.With(requireAdmin).Delete("/aggregate/tenants/{tenant}", r.serveDelete(tenantKey))
}

func globalKey(*http.Request) (string, error) { return GlobalKey, nil }

func (r *Rules) serveUsage(w http.ResponseWriter, req *http.Request) {
	t, err := tenant.Parse(chi.URLParam(req, "tenant"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	u := r.Usage(t, req.URL.Query().Get("metric"))
	if u == nil {
		u = []RuleUsage{}
	}
	writeJSON(w, http.StatusOK, struct {
		Tenant string      `json:"tenant"`
		Usage  []RuleUsage `json:"usage"`
	}{t.String(), u})
}

func tenantKey(req *http.Request) (string, error) {
	t, err := tenant.Parse(chi.URLParam(req, "tenant"))
	if err != nil {
		return "", err
	}
	return t.String(), nil
}

// listEntry describes one rule list in force.
type listEntry struct {
	Source string `json:"source"` // api or file
	Rules  int    `json:"rules"`
}

func (r *Rules) serveList(w http.ResponseWriter, _ *http.Request) {
	v := r.view.Load()
	resp := struct {
		Global            *listEntry           `json:"global,omitempty"`
		Tenants           map[string]listEntry `json:"tenants"`
		Running           []string             `json:"running"`
		MaxRulesPerTenant int                  `json:"max_rules_per_tenant"`
		MaxTenants        int                  `json:"max_tenants"`
	}{Tenants: map[string]listEntry{}, Running: []string{}, MaxRulesPerTenant: MaxRulesPerTenant, MaxTenants: MaxTenants}
	for _, m := range []map[string]List{v.file, v.api} {
		for k := range m {
			l, src, _ := r.Get(k)
			n, _ := count(l)
			if k == GlobalKey {
				resp.Global = &listEntry{Source: src, Rules: n}
			} else {
				resp.Tenants[k] = listEntry{Source: src, Rules: n}
			}
		}
	}
	for t := range v.instances {
		resp.Running = append(resp.Running, t.String())
	}
	sort.Strings(resp.Running)
	writeJSON(w, http.StatusOK, resp)
}

func (r *Rules) serveGet(key func(*http.Request) (string, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		k, err := key(req)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		l, src, ok := r.Get(k)
		if !ok {
			writeError(w, http.StatusNotFound, "no aggregation rules for "+k)
			return
		}
		w.Header().Set("Content-Type", "application/yaml")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Cardguard-Rules-Source", src)
		_, _ = w.Write(l)
	}
}

func (r *Rules) servePut(key func(*http.Request) (string, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		k, err := key(req)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, MaxBodyBytes))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				writeError(w, http.StatusRequestEntityTooLarge, "rule list larger than 1048576 bytes")
				return
			}
			writeError(w, http.StatusBadRequest, "read body: "+err.Error())
			return
		}
		if err := r.Set(k, body); err != nil {
			writeChangeError(w, err)
			return
		}
		n, _ := count(body)
		writeJSON(w, http.StatusOK, struct {
			Key    string `json:"key"`
			Source string `json:"source"`
			Rules  int    `json:"rules"`
		}{k, "api", n})
	}
}

func (r *Rules) serveDelete(key func(*http.Request) (string, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		k, err := key(req)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		if err := r.Delete(k); err != nil {
			writeChangeError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// writeChangeError maps the errors of changes to statuses: a bad list or a
// cap is the client's 400, rules not set through the API 404, the store's
// trouble 500.
func writeChangeError(w http.ResponseWriter, err error) {
	var le *LimitError
	switch {
	case errors.As(err, &le):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrNotSet):
		writeError(w, http.StatusNotFound, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, struct {
		Error string `json:"error"`
	}{msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
