package ingest

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/protoparser/protoparserutil"

	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/tenant"
)

// Protocol is a way data enters VictoriaMetrics other than remote write
// (OTLP, the import formats, Influx, ...). Its decoder only turns a request body
// into series (Builder); the pipeline then runs over them as it does over
// remote write, and what passes is forwarded as remote write 1.0. The pipeline
// knows nothing of protocols beyond this interface.
type Protocol interface {
	// Name is the protocol label of cardguard_ingested_samples_total.
	Name() string
	// Decode decodes body, decompressed, into b. It must not keep body, r or b
	// once it returns. Errors that are not a Builder's 413 are answered 400.
	Decode(r *http.Request, body []byte, b *Builder) error
	// Answer tells the sender the outcome the way its clients expect, and
	// returns the status it wrote.
	Answer(w http.ResponseWriter, r *http.Request, o Outcome) int
}

// Outcome is what became of one request of a Protocol.
type Outcome struct {
	// Err is nil when everything not in Rejected was stored (or aggregated).
	Err error
	// Rejected counts the samples that relabel rules, limits or the label guard
	// dropped on purpose, and Reasons names why; the rest was stored.
	Rejected int
	Reasons  []limits.Reason
}

// Status is the HTTP status cardguard answers for o.Err: 400, 413, 415, 429,
// 503, ...; 0 for no error.
func (o Outcome) Status() int {
	if o.Err == nil {
		return 0
	}
	return statusOf(o.Err)
}

// RetryAfter is how long the sender should wait before retrying, when o.Err
// says so.
func (o Outcome) RetryAfter() time.Duration {
	var se *statusError
	if asStatus(o.Err, &se) {
		return se.retryAfter
	}
	return 0
}

// Message explains what was rejected, for answers that carry it.
func (o Outcome) Message() string {
	if o.Rejected == 0 {
		return ""
	}
	rs := make([]string, len(o.Reasons))
	for i, r := range o.Reasons {
		rs[i] = string(r)
	}
	return fmt.Sprintf("cardguard dropped %d samples (%s); see cardguard_discarded_samples_total", o.Rejected, strings.Join(rs, ", "))
}

// Errorf is an error that Decode returns to be answered with status.
func Errorf(status int, format string, args ...any) error { return errorf(status, format, args...) }

// WriteError answers err as cardguard answers remote write: one line of text,
// with Retry-After when err has one. It returns the status.
func WriteError(w http.ResponseWriter, err error) int { return writeError(w, err) }

// ServeProtocol handles one request of protocol p for tenant t.
func (h *Handler) ServeProtocol(w http.ResponseWriter, r *http.Request, t tenant.ID, p Protocol) {
	start := h.now()
	tl := h.metrics.tenants.Label(t)
	var o Outcome
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		o.Err = errorf(http.StatusMethodNotAllowed, "%s needs POST, not %s", p.Name(), r.Method)
	} else if enc, err := parseEncoding(r.Header.Get("Content-Encoding")); err != nil {
		o.Err = err
	} else {
		o.Err = h.receive(w, r, t, tl, func(wc *writeCtx) error {
			return h.serveProtocol(r, t, tl, wc, enc, p, &o)
		})
	}
	code := 499
	if se := (*statusError)(nil); !asStatus(o.Err, &se) || se.status != 499 {
		code = p.Answer(w, r, o)
	}
	if code >= 500 {
		h.logger.Warn("write failed", "protocol", p.Name(), "tenant", tl, "status", code, "err", o.Err)
	}
	h.metrics.requests.WithLabelValues(tl, statusClass(code)).Inc()
	h.metrics.duration.WithLabelValues(tl).Observe(h.now().Sub(start).Seconds())
}

func (h *Handler) serveProtocol(r *http.Request, t tenant.ID, tl string, wc *writeCtx, enc int, p Protocol, o *Outcome) error {
	data, err := h.decodeBody(wc.decoded, wc.body, enc)
	if err != nil {
		return err
	}
	if enc != encNone {
		wc.decoded = data
	}
	bld := &wc.in
	bld.Reset(data, h.now().UnixMilli())
	extra, err := protoparserutil.GetExtraLabels(r)
	if err != nil {
		return errorf(http.StatusBadRequest, "%v", err)
	}
	for _, l := range extra {
		bld.Extra(l.Name, l.Value)
	}
	if err := p.Decode(r, data, bld); err != nil {
		return decodeError(p.Name(), err)
	}
	wr, err := bld.writeRequest()
	if err != nil {
		return err
	}
	wc.batch.fromWriteRequest(wr)
	res, err := h.forwardBatch(r, t, tl, wc, p.Name(), true)
	for _, d := range wc.series.discards {
		if !d.dryRun {
			o.Rejected += d.samples
			o.Reasons = append(o.Reasons, d.reason)
		}
	}
	if err != nil {
		return err
	}
	return res.verdict
}
