package ingest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/klauspost/compress/s2"

	"github.com/cardguard/cardguard/internal/ring"
	"github.com/cardguard/cardguard/internal/tenant"
)

// Peers says which replica processes the series of one metric of one tenant
// (ring.Ring).
type Peers interface {
	OwnerOf(t tenant.ID, metric string) (ring.Member, bool)
	Members() []ring.Member
	Self() string
	Size() int
}

// RoutedHeader marks a write that a replica sent to the owner of its series.
// The owner processes it as its own and never routes it again; it is honoured
// only with the admin credential (see RoutedContext). Its value says what the
// owner does with what it keeps: "1", forward it to VictoriaMetrics;
// routedDecide, answer it to the sender, which forwards the whole request.
const RoutedHeader = "X-Cardguard-Routed"

// routedDecide is RoutedHeader's value for a part whose owner decides and
// answers (see route).
const routedDecide = "decide"

// Headers of an owner's answer to a part it decided: unchangedHeader, the part
// goes as it was sent; otherwise the body is what it keeps, encoded, of
// samplesHeader samples, and verdictHeader the refusal to pass on once the
// rest is written (see result.verdict).
const (
	unchangedHeader = "X-Cardguard-Unchanged"
	samplesHeader   = "X-Cardguard-Samples"
	verdictHeader   = "X-Cardguard-Verdict"
)

type routedKey struct{}

type routedMode int

const (
	routedForward routedMode = iota + 1
	routedAnswer
)

// WithRouted marks ctx as carrying a write another replica routed here, to be
// forwarded to VictoriaMetrics.
func WithRouted(ctx context.Context) context.Context {
	return context.WithValue(ctx, routedKey{}, routedForward)
}

// RoutedContext marks ctx as carrying a write another replica routed here, as
// RoutedHeader's value says.
func RoutedContext(ctx context.Context, header string) context.Context {
	if header == routedDecide {
		return withDecided(ctx)
	}
	return WithRouted(ctx)
}

func withDecided(ctx context.Context) context.Context {
	return context.WithValue(ctx, routedKey{}, routedAnswer)
}

func routed(ctx context.Context) bool { return ctx.Value(routedKey{}) != nil }

// decided reports whether ctx carries a part whose owner answers what it
// keeps to the replica that sent it, instead of forwarding it.
func decided(ctx context.Context) bool {
	v, _ := ctx.Value(routedKey{}).(routedMode)
	return v == routedAnswer
}

// needsOwner reports whether tenant t's series must be processed by the owner
// of their metric and nowhere else: the label guard and the collision check of
// relabel rules decide on what they saw of every series of a metric, and an
// aggregate (of folded series or of stream aggregation rules) is right only
// where all its inputs meet. Other tenants' series may be processed by any
// replica when their owner cannot be reached: their limits are decided by the
// shared membership, and the rest is per series.
func (h *Handler) needsOwner(t tenant.ID) bool {
	st := &h.stages
	if st.Streams != nil && st.Streams.Has(t) {
		return true
	}
	if st.Folder == nil {
		return false
	}
	if st.Limits != nil && st.Limits.For(t).LabelGuard.MaxValuesPerLabel > 0 {
		return true
	}
	return st.Rules != nil && st.Rules.RulesFor(t) != nil
}

// peerDownFor is how long a replica that could not be connected to is skipped
// for the series that do not need their owner, while the ring still lists it
// (until its heartbeat expires).
const peerDownFor = 2 * time.Second

func (h *Handler) peerDown(id string) bool {
	at, ok := h.downPeers.Load(id)
	return ok && h.now().Sub(time.Unix(0, at.(int64))) < peerDownFor
}

// errUnreachable is the answer of a peer that could not be connected to, for
// a part the receiving replica then processes itself.
var errUnreachable = errors.New("owner unreachable")

// peerWrite is the part of a request that another replica owns.
type peerWrite struct {
	member    ring.Member
	buf       *[]byte // the WriteRequest, uncompressed (pooled: Handler.peerBufs)
	size      int     // bytes of the request's series it takes, as they came
	seriesLen int     // bytes of buf that are series; the metadata follows
	tss       []prompb.TimeSeries
	samples   int
	err       chan error
	answered  bool // err was read
	// exposed: buf was handed to a transport that may still be reading it
	// (sent uncompressed, and neither answered 2xx nor refused at dialling),
	// so that it must not go back to the pool. A part sent compressed never
	// hands buf itself to the transport.
	exposed bool

	// The owner's answer to a part it decided. forwarded: it forwarded the
	// part itself instead (see sendToPeer).
	forwarded  bool
	unchanged  bool
	out        []byte // what it keeps, encoded, when not unchanged
	outSamples int
	verdict    error
}

// routing is the parts of a request that other replicas own, on their way.
type routing struct {
	peers []*peerWrite
	// decide: the owners answer what they keep, and this replica forwards the
	// whole request; otherwise each owner forwards its part.
	decide bool
}

// answer waits for pw's owner.
func (pw *peerWrite) answer() error {
	err := <-pw.err
	pw.answered = true
	pw.err <- err // for whoever asks again
	return err
}

// wait collects the owners' answers. The parts whose owner could not be
// reached, which only a tenant whose series may be processed anywhere has,
// are returned for this replica to process.
func (rt *routing) wait(h *Handler) (local []*peerWrite, worst error) {
	for _, pw := range rt.peers {
		if err := pw.answer(); errors.Is(err, errUnreachable) {
			local = append(local, pw)
		} else {
			worst = worse(worst, err)
		}
	}
	return local, worst
}

// release gives the parts' buffers back once their owners answered.
func (rt *routing) release(h *Handler) {
	for _, pw := range rt.peers {
		if !pw.answered {
			_ = pw.answer()
		}
		if !pw.exposed {
			h.putPeerBuf(pw.buf)
		}
		pw.buf = nil
	}
}

// keepPeerBuf caps the buffers a routed write gives back to the pool.
const keepPeerBuf = keepDecoded

// getPeerBuf is an empty pooled buffer of at least n bytes.
func (h *Handler) getPeerBuf(n int) *[]byte {
	if v, ok := h.peerBufs.Get().(*[]byte); ok {
		*v = slices.Grow((*v)[:0], n)
		return v
	}
	b := make([]byte, 0, n)
	return &b
}

func (h *Handler) putPeerBuf(b *[]byte) {
	if b != nil && cap(*b) <= keepPeerBuf {
		h.peerBufs.Put(b)
	}
}

// route takes out of b the series that other replicas own and sends them to
// their owners, concurrently with the rest of the request; routing.wait
// collects the answers. With one replica it does nothing.
//
// With decide (a snappy remote-write 1.0 request of a tenant whose series may
// be processed anywhere), each owner runs its part through the stages and
// answers what it keeps instead of forwarding it, and this replica forwards
// the whole request: as it came when no part changed, which is the common
// case, so that the request is compressed by its sender only. Forwarded by
// their owners, the parts were each compressed again here and decompressed
// there, and the rest re-encoded here: more than a third of what three
// replicas spent beyond one (make bench-scale -scale.profile). The parts
// travel uncompressed then, as replicas of one deployment talk over their
// own network.
//
// Every series is processed by the owner of its metric. The label guard and the
// collision check of relabel rules decide on what they saw of every series of a
// metric, and an aggregate (of folded series or of stream aggregation rules,
// whose outputs keep __name__) is right only where all its inputs meet. And
// what a replica keeps per series (the series cache, the limits membership,
// the estimates' per-series work) is then its share of the series, not every
// series a balancer happened to send it: replicas divide the memory instead of
// each holding all of it.
func (h *Handler) route(r *http.Request, t tenant.ID, b *batch, decide bool) (*routing, error) {
	if h.cfg.Peers == nil || routed(r.Context()) || h.cfg.Peers.Size() < 2 {
		return nil, nil
	}
	anywhere := !h.needsOwner(t)
	decide = decide && anywhere && b.wr == nil
	var peers []*peerWrite
	byID := map[string]int32{} // index in peers
	// Two passes: the first finds each series' owner and what each peer's part
	// weighs, so that the second copies every part into a buffer of its size.
	// Appended as they came, the parts grew their buffers over and over: that
	// and the garbage it left were a third of what routing cost (make
	// bench-scale -scale.profile, 3 replicas).
	owners := slices.Grow(b.owners[:0], len(b.series))[:len(b.series)]
	b.owners = owners
	for i := range b.series {
		s := &b.series[i]
		name, err := seriesMetric(s)
		if err != nil {
			return nil, err
		}
		m, self := h.cfg.Peers.OwnerOf(t, name)
		if self || (anywhere && h.peerDown(m.ID)) {
			owners[i] = -1
			continue
		}
		j, ok := byID[m.ID]
		if !ok {
			j = int32(len(peers))
			byID[m.ID] = j
			peers = append(peers, &peerWrite{member: m, err: make(chan error, 1)})
		}
		owners[i] = j
		pw := peers[j]
		pw.size += len(s.raw)
		pw.samples += int(s.Samples)
	}
	var md []byte
	if b.metadata > 0 {
		// Every owner learns the metric types from metadata, which Prometheus
		// sends apart from the series, to whichever replica.
		if b.wr != nil {
			md = (&prompb.WriteRequest{Metadata: b.wr.Metadata}).MarshalProtobuf(nil)
		} else {
			b.eachMetadata(func(raw []byte, _ string, _ prompb.MetricType) { md = append(md, raw...) })
		}
		for _, m := range h.cfg.Peers.Members() {
			if _, ok := byID[m.ID]; ok || m.ID == h.cfg.Peers.Self() {
				continue
			}
			byID[m.ID] = int32(len(peers))
			peers = append(peers, &peerWrite{member: m, err: make(chan error, 1)})
		}
	}
	if len(peers) == 0 {
		return nil, nil
	}
	for _, pw := range peers {
		if b.wr == nil {
			pw.buf = h.getPeerBuf(pw.size + len(md))
		}
	}
	kept := 0
	for i := range b.series {
		s := &b.series[i]
		if owners[i] < 0 {
			b.series[kept] = *s
			kept++
			continue
		}
		pw := peers[owners[i]]
		if b.wr != nil {
			pw.tss = append(pw.tss, b.wr.Timeseries[s.idx])
		} else {
			*pw.buf = s.append(*pw.buf)
		}
	}
	b.series = b.series[:kept]
	ctx := r.Context()
	ua := r.Header.Get("User-Agent")
	for _, pw := range peers {
		if b.wr != nil {
			wr := prompb.WriteRequest{Timeseries: pw.tss}
			if len(md) > 0 {
				wr.Metadata = b.wr.Metadata
			}
			buf := wr.MarshalProtobuf(nil)
			pw.buf = &buf
		} else {
			pw.seriesLen = len(*pw.buf)
			*pw.buf = append(*pw.buf, md...)
		}
		go func() { pw.err <- h.sendToPeer(ctx, t, pw, ua, anywhere, decide) }()
	}
	return &routing{peers: peers, decide: decide}, nil
}

// isDialError reports whether err is a failure to connect: the request never
// left, so processing its series elsewhere cannot write them twice.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// seriesMetric is the metric name of s. A scanned series' labels are read in
// place and left unparsed: the pipeline parses (and sorts) them itself, and a
// series parsed here would skip its sorting.
func seriesMetric(s *series) (string, error) {
	if s.parsed {
		return metricName(s.Labels), nil
	}
	end := int(s.rest)
	if end == 0 {
		end = len(s.raw)
	}
	for i := int(s.msg); i < end; {
		f, err := nextField(s.raw, i)
		if err != nil {
			return "", parseError("cannot unmarshal timeseries: %v", err)
		}
		if f.num == 1 {
			l, err := scanLabel(s.raw[f.start:f.end])
			if err != nil {
				return "", parseError("cannot unmarshal label: %v", err)
			}
			if l.Name == "__name__" {
				return l.Value, nil
			}
		}
		i = f.end
	}
	return "", nil
}

// worse is the error the client must hear of two: upstream trouble (retry
// everything) over a rate limit (retry later) over a refusal (drop), over none.
func worse(a, b error) error {
	rank := func(err error) int {
		switch s := statusOf(err); {
		case err == nil:
			return 0
		case s >= 500:
			return 3
		case s == http.StatusTooManyRequests:
			return 2
		default:
			return 1
		}
	}
	if rank(b) > rank(a) {
		return b
	}
	return a
}

// sendToPeer writes pw to its owner as a remote-write request of tenant t, and
// maps the owner's answer as forward maps VictoriaMetrics': the owner answers
// only after VictoriaMetrics (or its aggregator) took what it was sent, so a 2xx
// may be passed on to the client.
//
// With decide, pw goes uncompressed for the owner to decide, and its answer
// is left in pw (readAnswer). With anywhere, a part its owner cannot have
// written (not sent, or only to be decided) answers errUnreachable, for the
// caller to process.
func (h *Handler) sendToPeer(ctx context.Context, t tenant.ID, pw *peerWrite, ua string, anywhere, decide bool) error {
	ctx, cancel := context.WithTimeout(ctx, h.scheme.Timeout()+5*time.Second)
	defer cancel()
	url := strings.TrimSuffix(pw.member.URL, "/") + "/insert/" + t.String() + "/prometheus/api/v1/write"
	var buf *[]byte
	encoding, mode := "snappy", "1"
	if decide {
		buf, encoding, mode = pw.buf, "identity", routedDecide
		pw.exposed = true
	} else {
		buf = h.getPeerBuf(s2.MaxEncodedLen(len(*pw.buf)) + binary.MaxVarintLen64)
		*buf = appendSnappyBlock(*buf, *pw.buf)
	}
	// A *bytes.Reader, which net/http knows to be in memory: it then writes
	// the body with the headers, from the connection's buffer, instead of
	// flushing the headers alone and copying the body through a 32 KiB buffer
	// it allocates per request (84 MB for 1M series in a 3-replica make
	// bench-scale).
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(*buf))
	if err != nil {
		return errorf(http.StatusInternalServerError, "cannot build the request to replica %s: %v", pw.member.ID, err)
	}
	req.Header.Set("Content-Encoding", encoding)
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	req.Header.Set(RoutedHeader, mode)
	if ua != "" {
		req.Header.Set("User-Agent", ua)
	}
	if h.cfg.PeerToken != "" {
		req.Header.Set("Authorization", "Bearer "+h.cfg.PeerToken)
	}
	resp, err := h.fwd.client.Do(req)
	// A part that cannot have been written by its owner is processed here:
	// one never sent (a dial error), or one the owner was only to decide,
	// whatever became of the request (an owner killed with the connection
	// open answers EOF), since deciding it again changes nothing.
	if err != nil && anywhere && (decide || isDialError(err)) {
		// After a dial error nothing read buf; after another the transport
		// may still be reading it.
		pw.exposed = pw.exposed && !isDialError(err)
		h.downPeers.Store(pw.member.ID, h.now().UnixNano())
		h.metrics.routed.WithLabelValues("unreachable").Add(float64(pw.samples))
		return errUnreachable
	}
	if err != nil {
		h.metrics.routeErrors.Inc()
		return &statusError{status: http.StatusServiceUnavailable, msg: fmt.Sprintf("replica %s, which owns %d samples of this request, cannot be reached: %s", pw.member.ID, pw.samples, sanitize(err.Error()))}
	}
	defer resp.Body.Close()
	if decide && resp.StatusCode/100 == 2 {
		// pw.buf is given back by routing.release, once the whole request
		// was forwarded (see below for why only after a 2xx).
		pw.exposed = false
		h.metrics.routed.WithLabelValues(statusClass(resp.StatusCode)).Add(float64(pw.samples))
		return pw.readAnswer(resp, h.cfg.MaxDecodedBytes)
	}
	if decide && resp.StatusCode == http.StatusUnsupportedMediaType {
		// A replica of a version that does not decide parts (during a
		// rolling upgrade) refuses the uncompressed body before it
		// processes anything: it gets its part to forward instead.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		if err := h.sendToPeer(ctx, t, pw, ua, anywhere, false); err != nil {
			return err
		}
		pw.forwarded = true
		return nil
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	h.metrics.routed.WithLabelValues(statusClass(resp.StatusCode)).Add(float64(pw.samples))
	switch {
	case resp.StatusCode/100 == 2:
		// The owner answers 2xx only once it read the whole body, so the
		// transport, which may still be finishing the request after Do
		// returned, has no more of buf to read. On any other answer buf is
		// left to the garbage collector.
		h.putPeerBuf(buf)
		return nil
	case resp.StatusCode == http.StatusTooManyRequests:
		secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		return &statusError{status: http.StatusTooManyRequests, msg: strings.TrimSpace(string(msg)), retryAfter: time.Duration(max(secs, 1)) * time.Second}
	case resp.StatusCode == http.StatusBadRequest:
		return &statusError{status: http.StatusBadRequest, msg: strings.TrimSpace(string(msg))}
	}
	h.metrics.routeErrors.Inc()
	return &statusError{status: http.StatusServiceUnavailable, msg: fmt.Sprintf("replica %s answered %d: %s", pw.member.ID, resp.StatusCode, sanitize(strings.TrimSpace(string(msg))))}
}

// readAnswer reads the owner's 2xx answer to a part it decided.
func (pw *peerWrite) readAnswer(resp *http.Response, maxBytes int64) error {
	if resp.Header.Get(unchangedHeader) == "1" {
		pw.unchanged = true
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil
	}
	out, err := io.ReadAll(io.LimitReader(resp.Body, maxBytes+1))
	if err == nil && int64(len(out)) > maxBytes {
		err = fmt.Errorf("answer of more than %d bytes", maxBytes)
	}
	n, nerr := strconv.Atoi(resp.Header.Get(samplesHeader))
	if err == nil && (nerr != nil || n < 0) {
		err = fmt.Errorf("bad %s %q", samplesHeader, resp.Header.Get(samplesHeader))
	}
	if err != nil {
		return &statusError{status: http.StatusServiceUnavailable, msg: fmt.Sprintf("replica %s, which owns %d samples of this request, answered: %s", pw.member.ID, pw.samples, sanitize(err.Error()))}
	}
	pw.out, pw.outSamples = out, n
	if v := resp.Header.Get(verdictHeader); v != "" {
		pw.verdict = &statusError{status: http.StatusBadRequest, msg: v}
	}
	return nil
}
