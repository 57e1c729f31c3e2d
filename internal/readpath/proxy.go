// Package readpath is the read side of cardguard: the reverse proxy for the
// Prometheus query API and the table of upstream paths it may forward (table.go).
//
// A request is served only when its path is in the table for the upstream's layout
// and the caller's role: tenant-scoped query APIs for the tenant's token,
// admin-only paths for the admin token, everything else refused with a
// Prometheus-style JSON error. Nothing that writes is ever forwarded. Only form
// bodies of query endpoints are read and re-encoded (without the client's tenant
// arguments); every other body is refused, never rewritten. It is the counterpart
// of internal/ingest and never imports it.
package readpath

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/cardguard/cardguard/internal/queryaudit"
	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/upstream"
)

// UsageRecorder receives every read that may select series and that VictoriaMetrics
// answered with 2xx. Record is called on the request goroutine and must return at
// once (copy, enqueue, never block); it must not keep form or header.
type UsageRecorder interface {
	Record(t tenant.ID, endpoint string, form url.Values, header http.Header, at time.Time)
}

// CostRecorder is a UsageRecorder that also takes every forwarded read of the
// routes that select series, whatever VictoriaMetrics answered, with what it cost.
// When the recorder implements it, RecordCost is called instead of Record, on the
// same terms.
type CostRecorder interface {
	RecordCost(t tenant.ID, endpoint string, form url.Values, header http.Header, at time.Time, c queryaudit.Cost)
}

// Config holds the read proxy's settings.
type Config struct {
	// MaxFormBytes bounds a form POST body, which cardguard reads to strip
	// tenant-changing arguments and to see the query.
	MaxFormBytes int64
	// Limits gives the tenants' read limits; nil enforces none.
	Limits LimitSource
	// Sketches serve the max_series_per_query estimate; nil estimates nothing.
	Sketches SeriesSketches
}

// DefaultMaxFormBytes is enough for very long match[] lists.
const DefaultMaxFormBytes = 4 << 20

// maxErrorBody bounds the upstream error bodies cardguard reads to put the client's
// path back in; larger ones pass unchanged.
const maxErrorBody = 64 << 10

// Proxy forwards the paths of the table to VictoriaMetrics for one tenant per
// request: streamed responses, status codes, headers and bodies unchanged (except
// the upstream path in error messages). It is safe for concurrent use.
type Proxy struct {
	cfg      Config
	scheme   *upstream.Scheme
	layout   Layout
	rp       *httputil.ReverseProxy
	recorder UsageRecorder
	costs    CostRecorder // the recorder, when it takes costs
	limiter  *Limiter     // nil: no read limits
	logger   *slog.Logger
	now      func() time.Time

	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	tenants  *tenant.Labeler
}

// New builds a Proxy. recorder may be nil.
func New(cfg Config, scheme *upstream.Scheme, recorder UsageRecorder, reg prometheus.Registerer, logger *slog.Logger) *Proxy {
	if cfg.MaxFormBytes <= 0 {
		cfg.MaxFormBytes = DefaultMaxFormBytes
	}
	f := promauto.With(reg)
	p := &Proxy{
		cfg:      cfg,
		scheme:   scheme,
		layout:   LayoutOf(scheme),
		recorder: recorder,
		logger:   logger,
		now:      time.Now,
		tenants:  tenant.NewLabeler(tenant.DefaultLabelCap),
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardguard_query_requests_total",
			Help: "Read-path requests by tenant, endpoint and status code, refused ones included.",
		}, []string{"tenant", "endpoint", "code"}),
		duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cardguard_query_request_duration_seconds",
			Help:    "Time until VictoriaMetrics' response headers arrived, by endpoint.",
			Buckets: prometheus.DefBuckets,
		}, []string{"endpoint"}),
	}
	p.costs, _ = recorder.(CostRecorder)
	if cfg.Limits != nil {
		p.limiter = newLimiter(cfg.Limits, cfg.Sketches, reg, p.now)
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		Transport:      tr,
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.proxyError,
		ErrorLog:       slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return p
}

type targetKey struct{}

// target is what the handler decided and Rewrite applies.
type target struct {
	url        *url.URL
	body       []byte     // re-encoded form body, or nil for no body
	clientPath string     // the path the client asked for, for error messages
	wantStats  bool       // read VictoriaMetrics' stats off a 2xx answer
	stats      *statsBody // set by modifyResponse when it did
}

// ServeTenant serves one request for tenant t; apiPath is the path below the
// tenant's Prometheus root (e.g. "api/v1/query" or "federate"), already cleaned by
// CleanAPIPath. admin is whether the caller holds the admin credential.
func (p *Proxy) ServeTenant(w http.ResponseWriter, r *http.Request, t tenant.ID, admin bool, apiPath string) {
	start := p.now()
	route := Lookup(apiPath)
	status, msg := p.check(route, admin, r)
	if status != 0 {
		typ := map[int]string{http.StatusNotFound: "not_found", http.StatusForbidden: "forbidden",
			http.StatusMethodNotAllowed: "method_not_allowed", http.StatusUnsupportedMediaType: "unsupported_media_type"}[status]
		if status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", "GET, HEAD, POST")
		}
		apiError(w, status, typ, msg)
		p.count(t, route.Endpoint, status, start)
		return
	}

	query := r.URL.Query()
	tg := target{clientPath: r.URL.Path}
	form := query
	if r.Method == http.MethodPost && isForm(r) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, p.cfg.MaxFormBytes))
		if err != nil {
			status := http.StatusBadRequest
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				status = http.StatusRequestEntityTooLarge
			}
			apiError(w, status, "bad_data", "cannot read form body: "+err.Error())
			p.count(t, route.Endpoint, status, start)
			return
		}
		// Like VictoriaMetrics (Go's ParseForm), a malformed pair is skipped and the
		// rest kept: the error is not the client's answer.
		fv, _ := url.ParseQuery(string(body))
		upstream.StripTenantArgs(fv)
		tg.body = []byte(fv.Encode())
		form = mergeValues(query, fv)
	}
	if p.limiter != nil && route.Usage {
		release, refused := p.limiter.admit(r.Context(), t, queryArgs{endpoint: route.Endpoint, exprs: exprsOf(route.Endpoint, form), form: form})
		if refused != nil {
			if refused.retryAfter > 0 {
				w.Header().Set("Retry-After", strconv.Itoa(int((refused.retryAfter+time.Second-1)/time.Second)))
			}
			apiError(w, refused.status, refused.errorType, refused.msg)
			p.count(t, route.Endpoint, refused.status, start)
			return
		}
		defer release() // once the answer has been passed on
	}
	tg.url = p.scheme.ReadURL(t, apiPath, query)
	tg.wantStats = p.costs != nil && (route.Endpoint == "query" || route.Endpoint == "query_range")
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	p.rp.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), targetKey{}, &tg)))
	p.count(t, route.Endpoint, rec.code, start)
	if p.recorder == nil || !route.Usage {
		return
	}
	ep := route.Endpoint
	if ep == "label_values" {
		ep = strings.TrimPrefix(apiPath, "api/v1/") // the recorder needs the label name
	}
	if p.costs != nil {
		p.costs.RecordCost(t, ep, form, r.Header, start, p.cost(&tg, rec.code, start, form))
		return
	}
	// Only what VictoriaMetrics answered counts as read: a refused query (too long,
	// unparsable, over a limit) read nothing.
	if rec.code/100 == 2 {
		p.recorder.Record(t, ep, form, r.Header, start)
	}
}

// cost is what a forwarded read cost, once its answer has been passed on.
func (p *Proxy) cost(tg *target, code int, start time.Time, form url.Values) queryaudit.Cost {
	c := queryaudit.Cost{Status: code, Latency: p.now().Sub(start), SeriesFetched: -1, ExecMsec: -1}
	if tg.stats != nil {
		st := tg.stats.stats()
		c.SeriesFetched, c.ExecMsec = st.seriesFetched, st.execMsec
	}
	if s, ok := parseTime(form.Get("start")); ok {
		if e, ok := parseTime(form.Get("end")); ok && e.After(s) {
			c.TimeRange = e.Sub(s)
		}
	}
	return c
}

// exprsOf returns the expressions a read selects series with: query= of the query
// endpoints, match[] of the others.
func exprsOf(endpoint string, form url.Values) []string {
	switch endpoint {
	case "query", "query_range", "query_exemplars":
		return form["query"]
	}
	return form["match[]"]
}

// Limiter returns the read limits' state, nil when Config.Limits was nil.
func (p *Proxy) Limiter() *Limiter { return p.limiter }

// check decides whether a request may be forwarded: 0, or the status and message
// to answer with.
func (p *Proxy) check(route Route, admin bool, r *http.Request) (int, string) {
	switch route.Access[p.layout] {
	case Refused:
		msg := route.why(p.layout)
		if msg == "" {
			msg = "unsupported path requested: " + strconv.Quote(r.URL.Path) + ": cardguard forwards only the Prometheus query API and the VictoriaMetrics paths its read table lists"
		} else {
			msg = strconv.Quote(r.URL.Path) + ": " + msg
		}
		return http.StatusNotFound, msg
	case Admin:
		if !admin {
			return http.StatusForbidden, strconv.Quote(r.URL.Path) + ": " + route.why(p.layout)
		}
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		return 0, ""
	case http.MethodPost:
	default:
		return http.StatusMethodNotAllowed, "method " + r.Method + " not allowed: query endpoints take GET or a form POST"
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case mt == "application/x-www-form-urlencoded":
		return 0, ""
	case r.ContentLength == 0:
		return 0, "" // arguments in the URL only
	case mt == "multipart/form-data":
		return http.StatusUnsupportedMediaType, "multipart bodies are not supported: send the arguments as application/x-www-form-urlencoded or in the URL"
	}
	return http.StatusUnsupportedMediaType, "unsupported Content-Type " + strconv.Quote(r.Header.Get("Content-Type")) +
		": query endpoints take application/x-www-form-urlencoded bodies or arguments in the URL"
}

func (p *Proxy) count(t tenant.ID, endpoint string, code int, start time.Time) {
	p.requests.WithLabelValues(p.tenants.Label(t), endpoint, strconv.Itoa(code)).Inc()
	p.duration.WithLabelValues(endpoint).Observe(p.now().Sub(start).Seconds())
}

func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	tg := pr.In.Context().Value(targetKey{}).(*target)
	pr.Out.URL = tg.url
	pr.Out.Host = tg.url.Host
	pr.Out.Header = forwardHeaders(pr.In)
	if tok := p.scheme.BearerToken(); tok != "" {
		pr.Out.Header.Set("Authorization", "Bearer "+tok)
	}
	pr.Out.Body, pr.Out.ContentLength, pr.Out.GetBody = http.NoBody, 0, nil
	if tg.body != nil {
		pr.Out.Body = io.NopCloser(bytes.NewReader(tg.body))
		pr.Out.ContentLength = int64(len(tg.body))
		pr.Out.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
}

// modifyResponse puts the path the client asked for back into upstream error
// messages: VictoriaMetrics names the path it was sent ("unsupported path requested:
// \"/prometheus/api/v1/format_query\"", "error in \"/select/1:0/prometheus/render\""),
// which is cardguard's rewriting, not the client's request.
func (p *Proxy) modifyResponse(resp *http.Response) error {
	tg, _ := resp.Request.Context().Value(targetKey{}).(*target)
	if tg != nil && tg.wantStats && resp.StatusCode/100 == 2 {
		switch resp.Header.Get("Content-Encoding") {
		case "":
			tg.stats = newStatsBody(resp.Body, false)
		case "gzip":
			tg.stats = newStatsBody(resp.Body, true)
		}
		if tg.stats != nil {
			resp.Body = tg.stats
		}
		return nil
	}
	if tg == nil || resp.StatusCode < 400 || resp.Header.Get("Content-Encoding") != "" || tg.url.Path == tg.clientPath ||
		resp.ContentLength > maxErrorBody {
		return nil
	}
	head, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody+1))
	if err != nil {
		return err
	}
	if len(head) > maxErrorBody {
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
		return nil
	}
	resp.Body.Close()
	body := bytes.ReplaceAll(head, []byte(tg.url.Path), []byte(tg.clientPath))
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return nil
}

func (p *Proxy) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) {
		w.WriteHeader(499)
		return
	}
	p.logger.Warn("query upstream unavailable", "path", r.URL.Path, "err", err)
	apiError(w, http.StatusServiceUnavailable, "unavailable", "upstream unavailable: "+err.Error())
}

// apiError answers in the Prometheus API error format, which Grafana shows as is.
func apiError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // "/insert/<tenant>/..." reads better than \u003ctenant\u003e
	_ = enc.Encode(map[string]string{"status": "error", "errorType": typ, "error": msg})
}

func isForm(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/x-www-form-urlencoded"
}

func mergeValues(a, b url.Values) url.Values {
	out := make(url.Values, len(a)+len(b))
	for k, v := range a {
		out[k] = append(out[k], v...)
	}
	for k, v := range b {
		out[k] = append(out[k], v...)
	}
	return out
}

// statusRecorder remembers the status code and passes flushes through, so that
// streamed responses (export, federate) keep streaming.
type statusRecorder struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wroteHeader {
		s.code = code
		s.wroteHeader = true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
