package adaptive

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/cardguard/cardguard/internal/tenant"
)

// maxBodyBytes bounds a preview, apply or exemptions request body.
const maxBodyBytes = 1 << 20

// Routes mounts the recommendations API on r (mounted under
// /api/cardguard/v1). requireTenant lets the admin or the tenant's own token
// read; requireAdmin guards everything that changes state or holds memory.
// who names the caller of an apply.
func (e *Engine) Routes(r chi.Router, requireAdmin, requireTenant func(http.Handler) http.Handler, who func(*http.Request) string) {
	r.Route("/recommendations/tenants/{tenant}", func(r chi.Router) {
		r.Use(requireTenant)
		r.Get("/", e.serveList)
		r.Get("/applied", e.serveApplied)
		r.Get("/exemptions", e.serveExemptions)
		r.With(requireAdmin).Put("/exemptions", e.servePutExemptions)
		r.Get("/metrics/{metric}", e.serveMetric)
		r.Get("/metrics/{metric}/preview", e.servePreview)
		r.With(requireAdmin).Post("/metrics/{metric}/preview", e.serveStartPreview)
		r.With(requireAdmin).Post("/metrics/{metric}/apply", func(w http.ResponseWriter, req *http.Request) { e.serveApply(w, req, who(req)) })
		r.With(requireAdmin).Post("/metrics/{metric}/revert", e.serveRevert)
	})
}

func pathTenant(w http.ResponseWriter, r *http.Request) (tenant.ID, bool) {
	t, err := tenant.Parse(chi.URLParam(r, "tenant"))
	if err != nil {
		writeError(w, errf(http.StatusBadRequest, "bad tenant: %v", err))
		return t, false
	}
	return t, true
}

func pathMetric(w http.ResponseWriter, r *http.Request) (string, bool) {
	m, err := url.PathUnescape(chi.URLParam(r, "metric"))
	if err != nil || m == "" || len(m) > 256 {
		writeError(w, errf(http.StatusBadRequest, "bad metric name in path"))
		return "", false
	}
	return m, true
}

func boolParam(w http.ResponseWriter, q url.Values, name string) (bool, bool) {
	v := q.Get(name)
	if v == "" {
		return false, true
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		writeError(w, errf(http.StatusBadRequest, "%s=%q: want true or false", name, clip(v, 32)))
		return false, false
	}
	return b, true
}

func (e *Engine) serveList(w http.ResponseWriter, r *http.Request) {
	t, ok := pathTenant(w, r)
	if !ok {
		return
	}
	refresh, ok := boolParam(w, r.URL.Query(), "refresh")
	if !ok {
		return
	}
	// With ?segment, each recommendation is for that segment's series only:
	// its rule, estimate and preview.
	l, err := e.SegmentRecommendations(r.Context(), t, r.URL.Query().Get("segment"), refresh)
	if err != nil {
		writeError(w, err)
		return
	}
	applied := e.Applied(t)
	writeJSON(w, http.StatusOK, struct {
		List
		SegmentLabel string    `json:"segmentLabel,omitempty"`
		Applied      []Applied `json:"applied"`
		SeriesSaved  int64     `json:"seriesSavedByApplied"`
	}{*l, e.o.Config.SegmentLabel, applied, SavedBy(applied)})
}

// SavedBy sums the measured savings of applied rules, or their estimates.
func SavedBy(as []Applied) int64 {
	var n int64
	for _, a := range as {
		if a.Preview != nil && a.Preview.State == PreviewDone {
			n += a.Preview.SeriesSaved
		} else {
			n += a.Estimate.Saved
		}
	}
	return n
}

func (e *Engine) serveApplied(w http.ResponseWriter, r *http.Request) {
	t, ok := pathTenant(w, r)
	if !ok {
		return
	}
	applied := e.Applied(t)
	writeJSON(w, http.StatusOK, map[string]any{"tenant": t.String(), "rules": applied, "seriesSaved": SavedBy(applied), "broken": e.BrokenAll(t)})
}

func (e *Engine) serveMetric(w http.ResponseWriter, r *http.Request) {
	t, ok := pathTenant(w, r)
	if !ok {
		return
	}
	m, ok := pathMetric(w, r)
	if !ok {
		return
	}
	var rules []Applied
	for _, a := range e.Applied(t) {
		if a.Metric == m {
			rules = append(rules, a)
		}
	}
	if rules == nil {
		rules = []Applied{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"tenant": t.String(), "metric": m, "rules": rules, "brokenByRule": e.BrokenBy(t, m)})
}

func (e *Engine) servePreview(w http.ResponseWriter, r *http.Request) {
	t, ok := pathTenant(w, r)
	if !ok {
		return
	}
	m, ok := pathMetric(w, r)
	if !ok {
		return
	}
	kind, seg := r.URL.Query().Get("kind"), r.URL.Query().Get("segment")
	if kind == "" {
		kind = KindAggregate
		if _, ok := e.PreviewOf(t, m, kind, seg); !ok {
			kind = KindDrop
		}
	}
	p, ok := e.PreviewOf(t, m, kind, seg)
	if !ok {
		what := ""
		if seg != "" {
			what = " with segment " + strconv.Quote(clip(seg, 64))
		}
		writeError(w, errf(http.StatusNotFound, "no preview of a %s rule for %q%s", clip(kind, 32), clip(m, 64), what))
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// spec reads an optional JSON RuleSpec body, or ?kind=&labels=a,b&segment=.
func readSpec(w http.ResponseWriter, r *http.Request) (RuleSpec, bool) {
	var s RuleSpec
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		writeError(w, bodyError(err))
		return s, false
	}
	if len(bytes.TrimSpace(body)) > 0 {
		if err := decodeOne(bytesReader(body), &s); err != nil {
			writeError(w, errf(http.StatusBadRequest, "bad rule: %v", err))
			return s, false
		}
	}
	q := r.URL.Query()
	if s.Kind == "" {
		s.Kind = q.Get("kind")
	}
	if len(s.Labels) == 0 && q.Get("labels") != "" {
		s.Labels = splitComma(q.Get("labels"))
	}
	if s.Match == "" {
		s.Match = q.Get("match")
	}
	if s.Segment == "" {
		s.Segment = q.Get("segment")
	}
	return s, true
}

func (e *Engine) serveStartPreview(w http.ResponseWriter, r *http.Request) {
	t, ok := pathTenant(w, r)
	if !ok {
		return
	}
	m, ok := pathMetric(w, r)
	if !ok {
		return
	}
	s, ok := readSpec(w, r)
	if !ok {
		return
	}
	p, err := e.StartPreview(r.Context(), t, m, s)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, p)
}

func (e *Engine) serveApply(w http.ResponseWriter, r *http.Request, by string) {
	t, ok := pathTenant(w, r)
	if !ok {
		return
	}
	m, ok := pathMetric(w, r)
	if !ok {
		return
	}
	force, ok := boolParam(w, r.URL.Query(), "force")
	if !ok {
		return
	}
	s, ok := readSpec(w, r)
	if !ok {
		return
	}
	a, err := e.Apply(r.Context(), t, m, s, by, force)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, a)
}

func (e *Engine) serveRevert(w http.ResponseWriter, r *http.Request) {
	t, ok := pathTenant(w, r)
	if !ok {
		return
	}
	m, ok := pathMetric(w, r)
	if !ok {
		return
	}
	a, err := e.Revert(t, m, r.URL.Query().Get("kind"), r.URL.Query().Get("segment"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, a)
}

func (e *Engine) serveExemptions(w http.ResponseWriter, r *http.Request) {
	t, ok := pathTenant(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, e.Exemptions(t))
}

func (e *Engine) servePutExemptions(w http.ResponseWriter, r *http.Request) {
	t, ok := pathTenant(w, r)
	if !ok {
		return
	}
	var x Exemptions
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		writeError(w, bodyError(err))
		return
	}
	if err := decodeOne(bytesReader(body), &x); err != nil {
		writeError(w, errf(http.StatusBadRequest, "bad exemptions (want {\"exact\":[],\"prefix\":[],\"regex\":[]}): %v", err))
		return
	}
	if err := e.SetExemptions(t, x); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, e.Exemptions(t))
}

// decodeOne decodes exactly one JSON object with known fields from r.
func decodeOne(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("more after the JSON object: send one JSON object")
	}
	return nil
}

// bodyError is the answer to a body that could not be read: 413 over
// maxBodyBytes, 400 otherwise (the client went away, a bad chunk).
func bodyError(err error) *Error {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return errf(http.StatusRequestEntityTooLarge, "body over %d bytes", maxBodyBytes)
	}
	return errf(http.StatusBadRequest, "cannot read the body: %v", err)
}

func writeError(w http.ResponseWriter, err error) {
	var ae *Error
	if !errors.As(err, &ae) {
		ae = &Error{Status: http.StatusInternalServerError, Msg: err.Error()}
	}
	body := map[string]any{"status": "error", "error": ae.Msg}
	if ae.Refusal != nil {
		body["refusal"] = ae.Refusal
	}
	writeJSON(w, ae.Status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

func splitComma(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
