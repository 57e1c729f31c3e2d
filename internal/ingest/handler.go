// Package ingest is cardguard's remote-write handler.
//
// A request goes through: bounded read → snappy (declared size checked first) →
// protobuf scan (wire.go; lib/prompb for native histograms and 2.0 converted by
// rw2.go) → validation → per-series stages (relabel, cardinality observation,
// label guard, limits) → forward to VictoriaMetrics → answer. The answer is never
// 2xx before VictoriaMetrics answered 2xx for what was forwarded; upstream trouble
// is a 503 so that Prometheus keeps the batch in its WAL and retries.
//
// When no stage changed any series, the original compressed bytes are forwarded as
// they came. When one did, the request is spliced together again from the bytes
// it came with (wire.go): only rewritten series' labels are encoded anew, and
// samples, exemplars and metadata are copied as received.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/upstream"
)

// Config holds process-wide ingest settings (per-tenant ones come from limits).
type Config struct {
	// MaxRequestBytes bounds the compressed body when a tenant has no own limit.
	MaxRequestBytes int64
	// MaxDecodedBytes bounds the decompressed protobuf.
	MaxDecodedBytes int64
	// MaxUpstreamConns bounds idle connections kept to VictoriaMetrics.
	MaxUpstreamConns int
	// MaxConcurrent bounds the requests processed at once, and with them memory:
	// at most MaxConcurrent × (MaxRequestBytes + a few × MaxDecodedBytes). Requests
	// beyond it wait up to QueueWait for a slot, then get 503 with Retry-After, so a
	// slow upstream makes clients back off instead of piling up in cardguard.
	MaxConcurrent int
	QueueWait     time.Duration
	// InflightBytes bounds the bodies being read, before they take a slot (see
	// inflight.go), and TenantInflightBytes one tenant's part of them. Defaults:
	// MaxConcurrent × MaxRequestBytes, and a quarter of that (at least one
	// largest body).
	InflightBytes, TenantInflightBytes int64
	// Peers, when set, sends every series to the replica that owns its metric
	// (route.go), with PeerToken (the admin token) as credential.
	Peers     Peers
	PeerToken string
	// Types, when set, learns metric types from remote-write metadata, which
	// aggregation asks how a folded metric's series combine.
	Types TypeSource
	// DryRun, when set, counts what aggregation would fold for tenants in dry
	// run.
	DryRun DryRecorder
	// CacheWindow is how long per-series decisions are remembered before the
	// cache starts afresh (the estimation window; default 1h).
	CacheWindow time.Duration
}

// Defaults for Config, matching VictoriaMetrics' own -maxInsertRequestSize.
const (
	DefaultMaxRequestBytes = 32 << 20
	DefaultMaxDecodedBytes = 32 << 20
)

// Handler serves remote write. It is safe for concurrent use.
type Handler struct {
	cfg     Config
	scheme  *upstream.Scheme
	fwd     *forwarder
	stages  Stages
	cache   *seriesCache
	keySeed maphash.Seed // for seriesKey
	metrics *metrics
	logger  *slog.Logger
	now     func() time.Time
	zstd    *zstd.Decoder // see decodeBody
	// downPeers holds, by replica ID, when a connection to it last failed
	// (Unix ns): see peerDown.
	downPeers sync.Map
	peerBufs  sync.Pool // *[]byte: the parts of requests routed to their owners

	ctxPool sync.Pool     // *writeCtx
	slots   chan struct{} // one per request being processed
	bodies  *inflight     // bodies being read
}

// DefaultQueueWait is how long a request may wait for a processing slot.
const DefaultQueueWait = 10 * time.Second

// DefaultMaxConcurrent is 4 requests per CPU, at least 16: a typical remote-write
// request takes a few milliseconds, so this serves thousands of requests per
// second while keeping memory proportional to the machine.
func DefaultMaxConcurrent() int { return max(16, 4*runtime.GOMAXPROCS(0)) }

// acquire waits for a processing slot.
func (h *Handler) acquire(r *http.Request) error {
	select {
	case h.slots <- struct{}{}:
		return nil
	default:
	}
	h.metrics.queued.Inc()
	defer h.metrics.queued.Dec()
	timer := time.NewTimer(h.cfg.QueueWait)
	defer timer.Stop()
	select {
	case h.slots <- struct{}{}:
		return nil
	case <-timer.C:
		h.metrics.overloaded.Inc()
		return &statusError{
			status:     http.StatusServiceUnavailable,
			msg:        fmt.Sprintf("too many concurrent remote-write requests: all %d slots busy for %s (upstream slow?); retry later or raise -ingest.maxConcurrentRequests", cap(h.slots), h.cfg.QueueWait),
			retryAfter: 5 * time.Second,
		}
	case <-r.Context().Done():
		return &statusError{status: 499, msg: "client closed the request while it waited for a slot"}
	}
}

// New builds a Handler. stages may have nil members: a nil stage is skipped.
func New(cfg Config, scheme *upstream.Scheme, stages Stages, reg prometheus.Registerer, logger *slog.Logger) *Handler {
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if cfg.MaxDecodedBytes <= 0 {
		cfg.MaxDecodedBytes = DefaultMaxDecodedBytes
	}
	if cfg.MaxUpstreamConns <= 0 {
		cfg.MaxUpstreamConns = 256
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = DefaultMaxConcurrent()
	}
	if cfg.QueueWait <= 0 {
		cfg.QueueWait = DefaultQueueWait
	}
	if cfg.InflightBytes <= 0 {
		cfg.InflightBytes = int64(cfg.MaxConcurrent) * cfg.MaxRequestBytes
	}
	if cfg.TenantInflightBytes <= 0 {
		cfg.TenantInflightBytes = max(cfg.InflightBytes/4, cfg.MaxRequestBytes)
	}
	h := &Handler{
		cfg:     cfg,
		scheme:  scheme,
		fwd:     newForwarder(scheme.Timeout(), scheme.BearerToken(), cfg.MaxUpstreamConns),
		stages:  stages,
		metrics: newMetrics(reg),
		cache:   newSeriesCache(cfg.CacheWindow),
		keySeed: maphash.MakeSeed(),
		slots:   make(chan struct{}, cfg.MaxConcurrent),
		bodies:  newInflight(cfg.InflightBytes, cfg.TenantInflightBytes),
		logger:  logger,
		now:     time.Now,
		zstd:    newZstdDecoder(cfg.MaxDecodedBytes),
	}
	if reg != nil {
		promauto.With(reg).NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cardguard_ingest_series_cache_entries",
			Help: fmt.Sprintf("Series whose per-window decisions are remembered (at most %d).", cacheShards*maxEntriesPerShard),
		}, func() float64 { return float64(h.cache.len()) })
	}
	return h
}

// writeCtx is the per-request scratch space, pooled so that a steady stream of
// requests allocates nothing per series.
type writeCtx struct {
	body    []byte
	decoded []byte
	chunk   []byte // scratch for appendSnappy: the encoded request
	out     []byte
	batch   batch
	wru     prompb.WriteRequestUnmarshaler
	v2      v2Decoder
	in      Builder // series decoded from other protocols (protocol.go)
	series  seriesScratch
	// wruHeld is what wru's pools were estimated to hold for the last request:
	// they are not visible from here, so putCtx judges them by it.
	wruHeld int
}

func (h *Handler) getCtx() *writeCtx {
	if v := h.ctxPool.Get(); v != nil {
		return v.(*writeCtx)
	}
	return &writeCtx{}
}

// Caps on what a pooled context keeps once its request is done, so that a large
// request does not make every later one pay for its memory. Typical requests
// (Prometheus: 2,000 samples, 100–500 KB decoded; vmagent: up to a few MB) fit and
// reuse their buffers; larger ones allocate and give back.
const (
	keepBody    = 4 << 20  // compressed body, and the forwarded one
	keepDecoded = 16 << 20 // decompressed request, and the encoding scratch
	keepSlice   = 2 << 20  // every slice of decoded values, in bytes
	keepMap     = 4096     // entries of v2Decoder.families
)

func (h *Handler) putCtx(wc *writeCtx) {
	if len(wc.v2.families) > keepMap { // a map never shrinks
		wc.v2.families = nil
	}
	wc.batch.reset()
	wc.wru.Reset()
	wc.v2.reset()
	wc.in.Reset(nil, 0)
	wc.series.reset()
	wc.trim()
	h.ctxPool.Put(wc)
}

// trim lets go of whatever the last request made wc grow beyond the keep caps.
func (wc *writeCtx) trim() {
	if cap(wc.body) > keepBody {
		// Label strings of other protocols point into it.
		wc.batch.release()
		wc.series.release()
		wc.in.release()
	}
	wc.body = trimSlice(wc.body, keepBody)
	wc.out = trimSlice(wc.out, keepBody)
	wc.chunk = trimSlice(wc.chunk, keepDecoded)
	if cap(wc.decoded) > keepDecoded {
		wc.decoded = nil
		// Label strings point into it: let it go for real.
		wc.batch.release()
		wc.series.release()
		wc.v2 = v2Decoder{}
		wc.wru = prompb.WriteRequestUnmarshaler{}
		wc.in.release()
	}
	in := &wc.in
	in.labels = trimSlice(in.labels, keepSlice)
	in.samples = trimSlice(in.samples, keepSlice)
	in.spans = trimSlice(in.spans, keepSlice)
	in.meta = trimSlice(in.meta, keepSlice)
	in.blocks = trimSlice(in.blocks, keepSlice/blockSize)
	in.wr.Timeseries = trimSlice(in.wr.Timeseries, keepSlice)
	b := &wc.batch
	b.series = trimSlice(b.series, keepSlice)
	b.others = trimSlice(b.others, keepSlice)
	b.arena = trimSlice(b.arena, keepSlice)
	s := &wc.series
	s.buf = trimSlice(s.buf, keepSlice)
	s.buf2 = trimSlice(s.buf2, keepSlice)
	s.arena = trimSlice(s.arena, keepSlice)
	s.hashBuf = trimSlice(s.hashBuf, keepSlice)
	s.discards = trimSlice(s.discards, keepSlice)
	s.relabeled = trimSlice(s.relabeled, keepSlice)
	s.entries = trimSlice(s.entries, keepSlice)
	s.order = trimSlice(s.order, keepSlice)
	d := &wc.v2
	d.symbols = trimSlice(d.symbols, keepSlice)
	d.refs = trimSlice(d.refs, keepSlice)
	d.labels = trimSlice(d.labels, keepSlice)
	d.samples = trimSlice(d.samples, keepSlice)
	d.wr.Timeseries = trimSlice(d.wr.Timeseries, keepSlice)
	d.wr.Metadata = trimSlice(d.wr.Metadata, keepSlice)
	if wc.wruHeld > keepSlice {
		wc.wru = prompb.WriteRequestUnmarshaler{}
	}
	wc.wruHeld = 0
}

// trimSlice empties s, and drops it when its capacity is over maxBytes.
func trimSlice[E any](s []E, maxBytes int) []E {
	var e E
	if cap(s)*int(unsafe.Sizeof(e)) > maxBytes {
		return nil
	}
	return s[:0]
}

// ServeWrite handles one remote-write request for tenant t.
func (h *Handler) ServeWrite(w http.ResponseWriter, r *http.Request, t tenant.ID) {
	start := h.now()
	tl := h.metrics.tenants.Label(t)
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.finish(w, tl, start, errorf(http.StatusMethodNotAllowed, "remote write needs POST, not %s", r.Method))
		return
	}
	proto, enc, err := contentProtocol(r)
	if err == nil {
		err = h.receive(w, r, t, tl, func(wc *writeCtx) error {
			return h.serve(w, r, t, tl, wc, proto, enc)
		})
	}
	h.finish(w, tl, start, err)
}

// receive reads the body, then waits for a processing slot and processes the
// request with serve: a client that trickles its body holds a share of the
// bytes bodies may reserve (inflight.go), never a slot.
func (h *Handler) receive(w http.ResponseWriter, r *http.Request, t tenant.ID, tl string, serve func(*writeCtx) error) error {
	var err error
	maxBytes := h.cfg.MaxRequestBytes
	if lim := h.stages.requestLimit(t); lim > 0 && lim < maxBytes {
		maxBytes = lim
	}
	// An uncompressed part of a request another replica decoded within its
	// limits is read straight into the decoded buffer (see serve).
	plain := decided(r.Context()) && r.Header.Get("Content-Encoding") == "identity"
	if plain {
		maxBytes = h.cfg.MaxDecodedBytes
	}
	if r.ContentLength > maxBytes {
		return errorf(http.StatusRequestEntityTooLarge, "request body of %d bytes exceeds the limit of %d bytes (max_request_bytes)", r.ContentLength, maxBytes)
	}
	reserve := maxBytes
	if r.ContentLength >= 0 {
		reserve = r.ContentLength
	}
	if err := h.bodies.acquire(r.Context(), t, reserve, h.cfg.QueueWait); err != nil {
		return err
	}
	defer h.bodies.release(t, reserve)
	wc := h.getCtx()
	defer h.putCtx(wc)
	read := &wc.body
	if plain {
		wc.body = wc.body[:0]
		read = &wc.decoded
	}
	if *read, err = readBody(w, r, *read, maxBytes); err != nil {
		return err
	}
	h.metrics.receivedBytes.WithLabelValues(tl).Add(float64(len(*read)))
	if err := h.acquire(r); err != nil {
		return err
	}
	defer func() { <-h.slots }()
	return serve(wc)
}

func (h *Handler) finish(w http.ResponseWriter, tl string, start time.Time, err error) {
	code := http.StatusNoContent
	var a answered
	if errors.As(err, &a) {
		code, err = a.code, nil
	} else if err != nil {
		var se *statusError
		if asStatus(err, &se) && se.status == 499 {
			code = 499
		} else {
			code = writeError(w, err)
		}
		if code >= 500 && code != 499 {
			h.logger.Warn("remote write failed", "tenant", tl, "status", code, "err", err)
		}
	} else {
		w.WriteHeader(http.StatusNoContent)
	}
	h.metrics.requests.WithLabelValues(tl, statusClass(code)).Inc()
	h.metrics.duration.WithLabelValues(tl).Observe(h.now().Sub(start).Seconds())
}

// serve processes a remote-write request whose body wc holds.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, t tenant.ID, tl string, wc *writeCtx, proto, enc int) error {
	if enc != encNone {
		// An uncompressed body (a part routed here to be decided) was read
		// into wc.decoded itself (receive). wc.decoded must never share its
		// array with wc.body, which a later request of this pooled context
		// decompresses into it from; and trading the two buffers left
		// contexts with a decoded buffer the size of a part, too small for
		// the next whole request (0.6 GB of allocations for 1M series in a
		// 3-replica make bench-scale).
		data, err := h.decodeBody(wc.decoded, wc.body, enc)
		if err != nil {
			return err
		}
		wc.decoded = data
	}
	if err := wc.decode(proto); err != nil {
		return err
	}
	if proto == protoV2 {
		setWritten(w.Header(), 0) // until VictoriaMetrics took what is forwarded
	}
	name := "prometheus_remote_write"
	switch {
	case proto == protoV2:
		name = "prometheus_remote_write_v2"
	case enc == encZstd:
		name = "vm_remote_write"
	}
	// A body in zstd or 2.0 is forwarded as snappy 1.0.
	res, err := h.forwardBatch(r, t, tl, wc, name, proto == protoV2 || enc != encSnappy)
	if err != nil {
		return err
	}
	if decided(r.Context()) {
		return answerDecided(w, res)
	}
	if proto == protoV2 {
		setWritten(w.Header(), res.forwardSamples)
	}
	return res.verdict
}

// forwardBatch runs the stages over wc.batch and forwards what they keep to
// VictoriaMetrics, re-encoded when something changed or reencode is set (the
// body is not snappy remote write 1.0). protocol names the protocol in
// cardguard_ingested_samples_total. A part another replica routed here to be
// decided (see route) is not forwarded: what the stages keep of it is left in
// res for the answer.
func (h *Handler) forwardBatch(r *http.Request, t tenant.ID, tl string, wc *writeCtx, protocol string, reencode bool) (res result, err error) {
	b := &wc.batch
	if decided(r.Context()) && b.wr != nil {
		// A replica routes parts to be decided only from requests it scanned,
		// never ones lib/prompb decoded (native histograms): the answer is
		// made of scanned series.
		return res, errorf(http.StatusBadRequest, "a part routed to be decided must not carry native histograms")
	}
	if h.cfg.Types != nil && b.metadata > 0 {
		h.learnTypes(t, b)
	}
	rt, err := h.route(r, t, b, !reencode)
	if err != nil {
		return res, err
	}
	switch {
	case rt != nil && rt.decide:
		defer rt.release(h)
	case rt != nil:
		// Whatever happens here, the client hears of the owners' answers: the
		// request is acknowledged only once every part of it was taken. Parts
		// whose owner could not be reached are processed here.
		defer func() {
			local, werr := rt.wait(h)
			for _, pw := range local {
				n, lerr := h.forwardLocal(r, t, tl, protocol, *pw.buf)
				res.forwardSamples += n
				werr = worse(werr, lerr)
			}
			rt.release(h)
			err = worse(err, werr)
		}()
	}
	res, err = h.process(t, tl, b, &wc.series)
	if err != nil {
		return res, err
	}
	h.metrics.samplesReceived.WithLabelValues(tl).Add(float64(res.received))
	h.metrics.ingested.WithLabelValues(tl, protocol).Add(float64(res.received))
	if decided(r.Context()) {
		if res.modified {
			wc.out = b.appendSeries(wc.out[:0])
			res.decided = wc.out
		}
		return res, nil
	}
	unchanged := !res.modified && !reencode && rt == nil
	if rt != nil && rt.decide {
		var werr error
		if unchanged, werr = h.gatherDecided(r, t, tl, protocol, rt, b, &res); werr != nil {
			// Nothing was forwarded: the client sends the whole request again.
			return res, werr
		}
		unchanged = unchanged && !res.modified
	}
	if res.forwardSeries == 0 && b.metadata == 0 && len(b.extra) == 0 {
		return res, nil
	}
	body := wc.body
	if !unchanged {
		wc.out = b.appendSnappy(wc.out[:0], &wc.chunk)
		body = wc.out
	}
	if err := h.fwd.forward(r.Context(), h.scheme.WriteURL(t), body, r.Header.Get("User-Agent")); err != nil {
		h.metrics.upstreamErrors.Inc()
		return res, err
	}
	h.metrics.samplesForwarded.WithLabelValues(tl).Add(float64(res.forwardSamples))
	return res, nil
}

// gatherDecided waits for the owners' answers to the parts rt routed to be
// decided, decides here those whose owner could not be reached, and adds
// what they keep to the request: as extra parts of b (what changed, or
// everything once anything did) and to res's counts and verdict. unchanged
// reports that every part goes as it was sent. An owner's failure fails the
// request, before anything of it is forwarded.
func (h *Handler) gatherDecided(r *http.Request, t tenant.ID, tl, protocol string, rt *routing, b *batch, res *result) (unchanged bool, err error) {
	local, err := rt.wait(h)
	for _, pw := range local {
		lres, lerr := h.decideLocal(r, t, tl, protocol, *pw.buf)
		err = worse(err, lerr)
		pw.unchanged = !lres.modified
		pw.out, pw.outSamples, pw.verdict = lres.decided, lres.forwardSamples, lres.verdict
	}
	if err != nil {
		return false, err
	}
	unchanged = true
	for _, pw := range rt.peers {
		if pw.forwarded {
			// Written by its owner: it leaves the request.
			unchanged = false
			continue
		}
		if pw.unchanged {
			b.extra = append(b.extra, (*pw.buf)[:pw.seriesLen])
			res.forwardSamples += pw.samples
		} else {
			unchanged = false
			b.extra = append(b.extra, pw.out)
			res.forwardSamples += pw.outSamples
		}
		res.verdict = worse(res.verdict, pw.verdict)
	}
	return unchanged, nil
}

// decideLocal decides here a part of r, an uncompressed remote-write 1.0
// body, whose owner could not be reached, as the owner would have.
func (h *Handler) decideLocal(r *http.Request, t tenant.ID, tl, protocol string, body []byte) (result, error) {
	return h.processLocal(r, withDecided, t, tl, protocol, body, false)
}

// forwardLocal processes here a part of r, an uncompressed remote-write 1.0
// body, whose owner could not be reached; it returns the samples forwarded.
func (h *Handler) forwardLocal(r *http.Request, t tenant.ID, tl, protocol string, body []byte) (int, error) {
	res, err := h.processLocal(r, WithRouted, t, tl, protocol, body, true)
	if err != nil {
		return res.forwardSamples, err
	}
	return res.forwardSamples, res.verdict
}

// processLocal runs body, a part of r, through forwardBatch here, as a
// request that mark says another replica routed. It runs in r's processing
// slot.
func (h *Handler) processLocal(r *http.Request, mark func(context.Context) context.Context, t tenant.ID, tl, protocol string, body []byte, reencode bool) (result, error) {
	wc := h.getCtx()
	defer h.putCtx(wc)
	wc.decoded = append(wc.decoded[:0], body...)
	if err := wc.decode(protoV1); err != nil {
		return result{}, err
	}
	res, err := h.forwardBatch(r.WithContext(mark(r.Context())), t, tl, wc, protocol, reencode)
	res.decided = slices.Clone(res.decided) // wc's, which goes back to the pool
	return res, err
}

// decode reads wc.decoded, a request of protocol proto, into wc.batch. What it
// holds is bounded by the request's budget (budget.go): a request over it is a 413.
func (wc *writeCtx) decode(proto int) error {
	b := &wc.batch
	if proto == protoV2 {
		// Converted to 1.0 (rw2.go): VictoriaMetrics would read a 2.0 body as an
		// empty 1.0 request and answer 204, silently losing every sample.
		wr, err := wc.v2.decode(wc.decoded)
		if err != nil {
			return err
		}
		b.fromWriteRequest(wr)
		return nil
	}
	histograms, err := b.scan(wc.decoded)
	if err != nil || !histograms {
		return err
	}
	// lib/prompb expands native histograms into series; the request is encoded
	// from its decoded form when something changes. What it would hold is
	// bounded before it runs: it grows its own pools unchecked.
	bud := newBudget(len(wc.decoded), heldPerByteHistograms)
	held, n := prompbHeld(wc.decoded)
	if !bud.take(held) {
		return bud.err("series expanded from native histograms", n)
	}
	wc.wruHeld = held
	wr, err := wc.wru.UnmarshalProtobuf(wc.decoded)
	if err != nil {
		return errorf(http.StatusBadRequest, "cannot parse remote write request: %v", err)
	}
	b.fromWriteRequest(wr)
	return nil
}

// answered is what serve returns once it wrote the answer itself, with its
// status.
type answered struct{ code int }

func (a answered) Error() string { return "answered " + strconv.Itoa(a.code) }

// answerDecided answers the replica that routed a part here to be decided
// what the stages keep of it (see route).
func answerDecided(w http.ResponseWriter, res result) error {
	if !res.modified {
		w.Header().Set(unchangedHeader, "1")
		w.WriteHeader(http.StatusNoContent)
		return answered{http.StatusNoContent}
	}
	w.Header().Set(samplesHeader, strconv.Itoa(res.forwardSamples))
	if res.verdict != nil {
		// A header value is one line of printable text.
		v := strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return ' '
			}
			return r
		}, truncate(res.verdict.Error(), 1024))
		w.Header().Set(verdictHeader, v)
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Header().Set("Content-Length", strconv.Itoa(len(res.decided)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(res.decided)
	return answered{http.StatusOK}
}
