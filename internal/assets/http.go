package assets

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/cardguard/cardguard/internal/tenant"
)

// Routes mounts the assets API on router (under /api/cardguard/v1):
//
//	GET    /usage/tenants/{tenant}/assets         the assets that apply to the tenant, with their errors
//	GET    /usage/tenants/{tenant}/assets/uses    what they read, per metric
//	PUT    /usage/tenants/{tenant}/assets/{name}  upload (admin), body at most Config.MaxAssetBytes
//	DELETE /usage/tenants/{tenant}/assets/{name}  remove an upload (admin)
//
// requireAdmin and requireTenant may be nil in tests.
func (b *Book) Routes(router chi.Router, requireAdmin, requireTenant func(http.Handler) http.Handler) {
	with := func(mw func(http.Handler) http.Handler) chi.Router {
		if mw == nil {
			return router
		}
		return router.With(mw)
	}
	with(requireTenant).Get("/usage/tenants/{tenant}/assets", b.serveList)
	with(requireTenant).Get("/usage/tenants/{tenant}/assets/uses", b.serveUses)
	with(requireAdmin).Put("/usage/tenants/{tenant}/assets/{name}", b.servePut)
	with(requireAdmin).Delete("/usage/tenants/{tenant}/assets/{name}", b.serveDelete)
}

func (b *Book) serveList(w http.ResponseWriter, r *http.Request) {
	t, ok := urlTenant(w, r)
	if !ok {
		return
	}
	files := b.Files(t)
	if files == nil {
		files = []FileStatus{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "success", "tenant": t.String(), "assets": files})
}

// useJSON is AssetUse with label uses spelled out.
type useJSON struct {
	Metric       string              `json:"metric"`
	Labels       map[string][]string `json:"labels"`
	AllLabels    bool                `json:"allLabels"`
	Refs         []AssetRef          `json:"refs"`
	RefsOverflow int                 `json:"refsOverflow,omitempty"`
}

// JSONUse is the JSON form of one metric's AssetUse.
func JSONUse(metric string, u AssetUse) any {
	out := useJSON{Metric: metric, Labels: map[string][]string{}, AllLabels: u.AllLabels, Refs: u.Refs, RefsOverflow: u.RefsOverflow}
	for l, how := range u.Labels {
		out.Labels[l] = how.Strings()
	}
	if out.Refs == nil {
		out.Refs = []AssetRef{}
	}
	return out
}

func (b *Book) serveUses(w http.ResponseWriter, r *http.Request) {
	t, ok := urlTenant(w, r)
	if !ok {
		return
	}
	uses := b.Uses(t)
	out := make([]any, 0, len(uses))
	for _, m := range sortedMetrics(uses) {
		out = append(out, JSONUse(m, uses[m]))
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "success", "tenant": t.String(), "metrics": out})
}

func (b *Book) servePut(w http.ResponseWriter, r *http.Request) {
	t, ok := urlTenant(w, r)
	if !ok {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, b.cfg.MaxAssetBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("asset larger than the limit of %d bytes (usage.max_asset_bytes)", b.cfg.MaxAssetBytes))
			return
		}
		writeError(w, http.StatusBadRequest, "cannot read the body: "+err.Error())
		return
	}
	st, err := b.Put(t, chi.URLParam(r, "name"), body)
	if err != nil {
		writeError(w, status(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "success", "asset": st})
}

func (b *Book) serveDelete(w http.ResponseWriter, r *http.Request) {
	t, ok := urlTenant(w, r)
	if !ok {
		return
	}
	if err := b.Delete(t, chi.URLParam(r, "name")); err != nil {
		writeError(w, status(err), err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// status maps Put and Delete errors to HTTP statuses.
func status(err error) int {
	switch {
	case errors.Is(err, ErrBadName), errors.Is(err, ErrUnreadable):
		return http.StatusBadRequest
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrTooMany):
		return http.StatusConflict
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrUploadsClosed):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func urlTenant(w http.ResponseWriter, r *http.Request) (tenant.ID, bool) {
	t, err := tenant.Parse(chi.URLParam(r, "tenant"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return tenant.ID{}, false
	}
	return t, true
}

func writeError(w http.ResponseWriter, code int, msg string) {
	typ := "bad_data"
	switch code {
	case http.StatusNotFound:
		typ = "not_found"
	case http.StatusInternalServerError, http.StatusServiceUnavailable:
		typ = "internal"
	}
	writeJSON(w, code, map[string]string{"status": "error", "errorType": typ, "error": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
