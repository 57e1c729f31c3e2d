package queryaudit

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

	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/upstream"
)

// UsageRecorder receives every read that may select series. Record is called on
// the request goroutine and must return at once (copy, enqueue, never block).
type UsageRecorder interface {
	Record(t tenant.ID, endpoint string, form url.Values, header http.Header, at time.Time)
}

// ProxyConfig holds the query proxy's settings.
type ProxyConfig struct {
	// MaxFormBytes bounds a form POST body, which cardguard reads to strip
	// tenant-changing arguments and to see the query.
	MaxFormBytes int64
}

// DefaultMaxFormBytes is enough for very long match[] lists.
const DefaultMaxFormBytes = 4 << 20

// Proxy forwards the Prometheus HTTP API to VictoriaMetrics for one tenant per
// request: GET and form POST, streamed responses, status codes, headers and bodies
// unchanged. It is safe for concurrent use.
type Proxy struct {
	cfg      ProxyConfig
	scheme   *upstream.Scheme
	rp       *httputil.ReverseProxy
	recorder UsageRecorder
	logger   *slog.Logger
	now      func() time.Time

	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	tenants  *tenant.Labeler
}

// NewProxy builds a Proxy. recorder may be nil.
func NewProxy(cfg ProxyConfig, scheme *upstream.Scheme, recorder UsageRecorder, reg prometheus.Registerer, logger *slog.Logger) *Proxy {
	if cfg.MaxFormBytes <= 0 {
		cfg.MaxFormBytes = DefaultMaxFormBytes
	}
	f := promauto.With(reg)
	p := &Proxy{
		cfg:      cfg,
		scheme:   scheme,
		recorder: recorder,
		logger:   logger,
		now:      time.Now,
		tenants:  tenant.NewLabeler(tenant.DefaultLabelCap),
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardguard_query_requests_total",
			Help: "Prometheus API requests proxied to VictoriaMetrics by tenant, endpoint and status code.",
		}, []string{"tenant", "endpoint", "code"}),
		duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cardguard_query_request_duration_seconds",
			Help:    "Time until VictoriaMetrics' response headers arrived, by endpoint.",
			Buckets: prometheus.DefBuckets,
		}, []string{"endpoint"}),
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:      p.rewrite,
		Transport:    tr,
		ErrorHandler: p.proxyError,
		ErrorLog:     slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return p
}

type targetKey struct{}

// target is what the handler decided and Rewrite applies.
type target struct {
	url  *url.URL
	body []byte // re-encoded form body, or nil to keep the original
}

// Endpoint names the Prometheus API path below /api/v1/ for metrics: a fixed set,
// so traffic cannot create label values.
func Endpoint(apiPath string) string {
	p := strings.TrimPrefix(apiPath, "api/v1/")
	switch p {
	case "query", "query_range", "query_exemplars", "series", "labels", "export", "export/native", "export/csv",
		"metadata", "status/buildinfo", "status/tsdb", "targets", "rules", "alerts", "format_query", "parse_query":
		return p
	}
	switch {
	case p == apiPath && apiPath == "federate":
		return "federate"
	case strings.HasPrefix(p, "label/") && strings.HasSuffix(p, "/values"):
		return "label_values"
	}
	return "other"
}

// selectsSeries reports whether an endpoint reads series and so counts as usage.
func selectsSeries(endpoint string) bool {
	switch endpoint {
	case "query", "query_range", "query_exemplars", "series", "labels", "label_values", "export", "export/native", "export/csv", "federate":
		return true
	}
	return false
}

// ServeTenant proxies one request for tenant t; apiPath is the path below the
// tenant's Prometheus root, e.g. "api/v1/query" or "federate", already checked to be
// clean (no "..", no empty segments).
func (p *Proxy) ServeTenant(w http.ResponseWriter, r *http.Request, t tenant.ID, apiPath string) {
	start := p.now()
	endpoint := Endpoint(apiPath)
	query := r.URL.Query()
	var tg target
	form := query
	if r.Method == http.MethodPost && isForm(r) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, p.cfg.MaxFormBytes))
		if err != nil {
			status := http.StatusBadRequest
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				status = http.StatusRequestEntityTooLarge
			}
			p.apiError(w, status, "bad_data", "cannot read form body: "+err.Error())
			p.count(t, endpoint, status, start)
			return
		}
		fv, err := url.ParseQuery(string(body))
		if err != nil {
			p.apiError(w, http.StatusBadRequest, "bad_data", "cannot parse form body: "+err.Error())
			p.count(t, endpoint, http.StatusBadRequest, start)
			return
		}
		upstream.StripTenantArgs(fv)
		tg.body = []byte(fv.Encode())
		form = mergeValues(query, fv)
	}
	tg.url = p.scheme.ReadURL(t, apiPath, query)
	if p.recorder != nil && selectsSeries(endpoint) {
		rec := endpoint
		if endpoint == "label_values" {
			// The recorder needs the label name: "label/<name>/values".
			rec = strings.TrimPrefix(apiPath, "api/v1/")
		}
		p.recorder.Record(t, rec, form, r.Header, start)
	}
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	p.rp.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), targetKey{}, &tg)))
	p.count(t, endpoint, rec.code, start)
}

func (p *Proxy) count(t tenant.ID, endpoint string, code int, start time.Time) {
	p.requests.WithLabelValues(p.tenants.Label(t), endpoint, strconv.Itoa(code)).Inc()
	p.duration.WithLabelValues(endpoint).Observe(p.now().Sub(start).Seconds())
}

func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	tg := pr.In.Context().Value(targetKey{}).(*target)
	pr.Out.URL = tg.url
	pr.Out.Host = tg.url.Host
	pr.SetXForwarded()
	// The client's credentials are cardguard's, never VictoriaMetrics'.
	pr.Out.Header.Del("Authorization")
	if tok := p.scheme.BearerToken(); tok != "" {
		pr.Out.Header.Set("Authorization", "Bearer "+tok)
	}
	if tg.body != nil {
		pr.Out.Body = io.NopCloser(bytes.NewReader(tg.body))
		pr.Out.ContentLength = int64(len(tg.body))
		pr.Out.Header.Set("Content-Length", strconv.Itoa(len(tg.body)))
		pr.Out.GetBody = nil
	}
}

func (p *Proxy) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) {
		w.WriteHeader(499)
		return
	}
	p.logger.Warn("query upstream unavailable", "path", r.URL.Path, "err", err)
	p.apiError(w, http.StatusServiceUnavailable, "unavailable", "upstream unavailable: "+err.Error())
}

// apiError answers in the Prometheus API error format, which Grafana shows as is.
func (p *Proxy) apiError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"status": "error", "errorType": typ, "error": msg})
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

// CleanAPIPath checks the part of a read path below the tenant's Prometheus root.
// Anything that a server or VictoriaMetrics could resolve to another place — dot
// segments, empty segments, encoded slashes or backslashes — is refused, so that a
// request can never leave the tenant it was authorised for.
func CleanAPIPath(rawRest string) (string, bool) {
	if rawRest == "" || strings.HasPrefix(rawRest, "/") || strings.Contains(rawRest, "//") || strings.ContainsRune(rawRest, '\\') {
		return "", false
	}
	lower := strings.ToLower(rawRest)
	if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") || strings.Contains(lower, "%2e") || strings.Contains(lower, "%00") {
		return "", false
	}
	for _, seg := range strings.Split(rawRest, "/") {
		if seg == "." || seg == ".." {
			return "", false
		}
	}
	p, err := url.PathUnescape(rawRest)
	if err != nil {
		return "", false
	}
	return p, true
}
