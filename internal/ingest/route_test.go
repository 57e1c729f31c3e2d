package ingest

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardguard/cardguard/internal/aggregate"
	"github.com/cardguard/cardguard/internal/guard"
	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/ring"
	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/upstream"
)

// replica is one handler behind its own server, as a cardguard replica is.
type replica struct {
	h     *Handler
	srv   *httptest.Server
	ring  *ring.Ring
	folds *aggregate.Aggregator
	types *aggregate.Types
	up    *fakeUpstream
}

func twoReplicas(t *testing.T) [2]*replica {
	def := limits.Default()
	def.LabelGuard.MaxValuesPerLabel = 1
	return twoReplicasWith(t, def)
}

// twoReplicasWith is twoReplicas with def as every tenant's limits.
func twoReplicasWith(t *testing.T, def limits.Limits) [2]*replica {
	t.Helper()
	var rs [2]*replica
	for i, id := range []string{"a", "b"} {
		r := &replica{ring: ring.New(id), types: aggregate.NewTypes(100), up: newFakeUpstream(t)}
		scheme, err := upstream.New(upstream.Config{Mode: upstream.ModeCluster, InsertURL: r.up.srv.URL, SelectURL: r.up.srv.URL, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		registry, err := limits.NewRegistry(def, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		aggCfg := aggregate.Config{}
		if err := aggCfg.Validate(); err != nil {
			t.Fatal(err)
		}
		r.folds = aggregate.New(aggCfg, nil, nil)
		r.h = New(Config{Peers: r.ring, Types: r.types}, scheme, Stages{
			Guard: guard.New(guard.Options{}), Limits: registry, Folder: r.folds,
			Enforcer: limits.NewEnforcer(limits.EnforcerOptions{}),
		}, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
		r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if v := req.Header.Get(RoutedHeader); v != "" {
				req = req.WithContext(RoutedContext(req.Context(), v))
			}
			seg := strings.Split(req.URL.Path, "/")[2]
			r.h.ServeWrite(w, req, tenant.MustParse(seg))
		}))
		t.Cleanup(r.srv.Close)
		rs[i] = r
	}
	members := []ring.Member{{ID: "a", URL: rs[0].srv.URL}, {ID: "b", URL: rs[1].srv.URL}}
	rs[0].ring.Set(members)
	rs[1].ring.Set(members)
	return rs
}

func postTo(t *testing.T, url string, wr *prompb.WriteRequest) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"/insert/1/prometheus/api/v1/write", strings.NewReader(string(encode(wr))))
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Whichever replica receives them, the series of a metric are folded by the one
// that owns it, and metadata reaches every replica.
func TestRouteToOwner(t *testing.T) {
	rs := twoReplicas(t)
	tn := tenant.MustParse("1")
	// A metric each replica owns.
	names := map[string]string{}
	for i := 0; len(names) < 2; i++ {
		name := "jobs_" + strings.Repeat("x", i)
		m, _ := rs[0].ring.OwnerOf(tn, name)
		if _, ok := names[m.ID]; !ok {
			names[m.ID] = name
		}
	}
	md := &prompb.WriteRequest{}
	for _, n := range names {
		md.Metadata = append(md.Metadata, prompb.MetricMetadata{Type: prompb.MetricTypeCounter, MetricFamilyName: n})
	}
	if code := postTo(t, rs[0].srv.URL, md); code != http.StatusNoContent {
		t.Fatalf("metadata: %d", code)
	}
	for i, u := range []string{"u1", "u2", "u3", "u4"} {
		wr := &prompb.WriteRequest{}
		for _, n := range names {
			wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
				Labels:  []prompb.Label{{Name: "__name__", Value: n}, {Name: "user", Value: u}},
				Samples: []prompb.Sample{{Value: 1, Timestamp: time.Now().UnixMilli()}},
			})
		}
		// Round-robin: each user's series reach the two replicas in turn.
		if code := postTo(t, rs[i%2].srv.URL, wr); code != http.StatusNoContent {
			t.Fatalf("write %d: %d", i, code)
		}
	}
	for i, r := range rs {
		id := []string{"a", "b"}[i]
		for owner, n := range names {
			got := r.folds.Snapshot(tn, n, 10)
			if owner != id {
				if len(got) != 0 {
					t.Errorf("replica %s aggregates %s, which %s owns: %+v", id, n, owner, got)
				}
				continue
			}
			// One value admitted by the guard, the other three folded, all here.
			if len(got) != 1 || got[0].Inputs != 3 || got[0].Kind != "counter" {
				t.Errorf("replica %s, its metric %s: %+v, want one counter of 3 inputs", id, n, got)
			}
		}
	}
	// With the other replica gone, its part of a write is not acknowledged.
	rs[1].srv.Close()
	wr := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: names["b"]}, {Name: "user", Value: "u9"}},
		Samples: []prompb.Sample{{Value: 1, Timestamp: time.Now().UnixMilli()}},
	}}}
	if code := postTo(t, rs[0].srv.URL, wr); code != http.StatusServiceUnavailable {
		t.Fatalf("owner down: %d, want 503", code)
	}
}

// routedStreams stands for a tenant's stream aggregation rules: it takes every
// series and remembers their metrics.
type routedStreams struct {
	mu  sync.Mutex
	got map[string]int
}

func (f *routedStreams) Has(tenant.ID) bool { return true }

func (f *routedStreams) Push(_ tenant.ID, series []prompb.TimeSeries, matched []uint32) []uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	matched = append(matched[:0], make([]uint32, len(series))...)
	for i := range series {
		for _, l := range series[i].Labels {
			if l.Name == "__name__" {
				f.got[strings.Clone(l.Value)]++ // the labels alias the request
			}
		}
		matched[i] = 1
	}
	return matched
}

// The series of a tenant with stream aggregation rules go to their metric's
// owner too, even without a label guard or relabel rules.
func TestRouteStreamRules(t *testing.T) {
	var rs [2]*replica
	var streams [2]*routedStreams
	for i, id := range []string{"a", "b"} {
		r := &replica{ring: ring.New(id), up: newFakeUpstream(t)}
		scheme, err := upstream.New(upstream.Config{Mode: upstream.ModeCluster, InsertURL: r.up.srv.URL, SelectURL: r.up.srv.URL, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		streams[i] = &routedStreams{got: map[string]int{}}
		r.h = New(Config{Peers: r.ring}, scheme, Stages{Streams: streams[i]}, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
		r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if v := req.Header.Get(RoutedHeader); v != "" {
				req = req.WithContext(RoutedContext(req.Context(), v))
			}
			r.h.ServeWrite(w, req, tenant.MustParse("1"))
		}))
		t.Cleanup(r.srv.Close)
		rs[i] = r
	}
	members := []ring.Member{{ID: "a", URL: rs[0].srv.URL}, {ID: "b", URL: rs[1].srv.URL}}
	rs[0].ring.Set(members)
	rs[1].ring.Set(members)
	wr := &prompb.WriteRequest{}
	for i := range 20 {
		wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
			Labels:  []prompb.Label{{Name: "__name__", Value: fmt.Sprintf("m%d", i)}},
			Samples: []prompb.Sample{{Value: 1, Timestamp: time.Now().UnixMilli()}},
		})
	}
	for _, r := range rs {
		if code := postTo(t, r.srv.URL, wr); code != http.StatusNoContent {
			t.Fatalf("write: %d", code)
		}
	}
	for i, id := range []string{"a", "b"} {
		for m, n := range streams[i].got {
			owner, _ := rs[0].ring.OwnerOf(tenant.MustParse("1"), m)
			if owner.ID != id || n != 2 {
				t.Errorf("replica %s took %s %d times; its owner is %s, and it was sent twice", id, m, n, owner.ID)
			}
		}
	}
	if len(streams[0].got)+len(streams[1].got) != 20 {
		t.Fatalf("metrics taken: %d and %d, want 20 in all", len(streams[0].got), len(streams[1].got))
	}
}

func TestAppendSnappyBlock(t *testing.T) {
	big := make([]byte, snappyBlock+12345)
	for i := range big {
		big[i] = byte(i / 7 % 251)
	}
	for _, src := range [][]byte{nil, []byte("x"), []byte(strings.Repeat("abc", 1000)), big} {
		enc := appendSnappyBlock([]byte("prefix"), src)
		if !bytes.HasPrefix(enc, []byte("prefix")) {
			t.Fatal("prefix overwritten")
		}
		got, err := snappy.Decode(nil, enc[len("prefix"):])
		if err != nil {
			t.Fatalf("%d bytes: %v", len(src), err)
		}
		if !bytes.Equal(got, src) {
			t.Fatalf("%d bytes: decoded %d bytes that differ", len(src), len(got))
		}
	}
}

// metricOwnedBy returns a metric name whose owner is id.
func metricOwnedBy(r *replica, tn tenant.ID, id, prefix string) string {
	for i := 0; ; i++ {
		name := prefix + strconv.Itoa(i)
		if m, _ := r.ring.OwnerOf(tn, name); m.ID == id {
			return name
		}
	}
}

// forwardedSeries decodes every request an upstream took into its series'
// label sets, sorted.
func forwardedSeries(t *testing.T, up *fakeUpstream) []string {
	t.Helper()
	up.mu.Lock()
	defer up.mu.Unlock()
	var out []string
	for _, b := range up.bodies {
		var wru prompb.WriteRequestUnmarshaler
		wr, err := wru.UnmarshalProtobuf(mustDecode(b))
		if err != nil {
			t.Fatal(err)
		}
		for _, ts := range wr.Timeseries {
			out = append(out, fmt.Sprint(ts.Labels))
		}
	}
	slices.Sort(out)
	return out
}

func seriesOf(name string, users ...string) []prompb.TimeSeries {
	var out []prompb.TimeSeries
	for _, u := range users {
		out = append(out, prompb.TimeSeries{
			Labels:  []prompb.Label{{Name: "__name__", Value: name}, {Name: "user", Value: u}},
			Samples: []prompb.Sample{{Value: 1, Timestamp: time.Now().UnixMilli()}},
		})
	}
	return out
}

// A tenant whose series may be processed anywhere: each owner decides its
// part and the receiving replica forwards the whole request, as it came when
// nothing changed: one request to VictoriaMetrics, compressed by its sender.
func TestDecidedRequestForwardedWhole(t *testing.T) {
	rs := twoReplicasWith(t, limits.Default())
	tn := tenant.MustParse("1")
	ma, mb := metricOwnedBy(rs[0], tn, "a", "a_metric_"), metricOwnedBy(rs[0], tn, "b", "b_metric_")
	wr := &prompb.WriteRequest{
		Timeseries: append(seriesOf(ma, "u1", "u2"), seriesOf(mb, "u1", "u2", "u3")...),
		Metadata:   []prompb.MetricMetadata{{Type: prompb.MetricTypeCounter, MetricFamilyName: mb}},
	}
	body := encode(wr)
	if code := postTo(t, rs[0].srv.URL, wr); code != http.StatusNoContent {
		t.Fatalf("write: %d", code)
	}
	if n := rs[1].up.forwarded(); n != 0 {
		t.Errorf("the owner of %s forwarded %d requests itself; want 0, it only decides", mb, n)
	}
	if n := rs[0].up.forwarded(); n != 1 {
		t.Fatalf("the receiving replica forwarded %d requests, want 1", n)
	}
	if got := rs[0].up.last(); !bytes.Equal(got, body) {
		t.Errorf("forwarded %d bytes that differ from the %d the client sent; want them as they came", len(got), len(body))
	}
	// The owner saw its part: it learned the type from the metadata.
	if k := rs[1].types.KindOf(tn, mb); k != aggregate.Counter {
		t.Errorf("the owner of %s learned type %s, want counter", mb, k)
	}
}

// What an owner refuses of its part leaves the request; what it keeps, and the
// receiving replica's own part, go to VictoriaMetrics once, together.
func TestDecidedRefusalsLeaveTheRequest(t *testing.T) {
	def := limits.Default()
	def.MaxSeriesPerMetric = 2
	def.OnLimit = limits.OnLimitDrop
	rs := twoReplicasWith(t, def)
	tn := tenant.MustParse("1")
	ma, mb := metricOwnedBy(rs[0], tn, "a", "a_metric_"), metricOwnedBy(rs[0], tn, "b", "b_metric_")
	// Through b first: its own metric's first two series are admitted there.
	if code := postTo(t, rs[1].srv.URL, &prompb.WriteRequest{Timeseries: seriesOf(mb, "u1", "u2")}); code != http.StatusNoContent {
		t.Fatalf("first write: %d", code)
	}
	// Through a: u3 of b's metric is over b's limit for it.
	if code := postTo(t, rs[0].srv.URL, &prompb.WriteRequest{Timeseries: append(seriesOf(ma, "u1"), seriesOf(mb, "u1", "u3")...)}); code != http.StatusNoContent {
		t.Fatalf("second write: %d", code)
	}
	want := []string{fmt.Sprint(seriesOf(ma, "u1")[0].Labels), fmt.Sprint(seriesOf(mb, "u1")[0].Labels)}
	slices.Sort(want)
	if got := forwardedSeries(t, rs[0].up); !slices.Equal(got, want) {
		t.Errorf("replica a forwarded %v, want %v (u3 of %s refused by its owner)", got, want, mb)
	}
	if n := rs[0].up.forwarded(); n != 1 {
		t.Errorf("replica a forwarded %d requests, want 1", n)
	}
}

// An owner that cannot be reached: its part is decided by the receiving
// replica, and the request still goes once.
func TestDecidedOwnerUnreachable(t *testing.T) {
	rs := twoReplicasWith(t, limits.Default())
	tn := tenant.MustParse("1")
	ma, mb := metricOwnedBy(rs[0], tn, "a", "a_metric_"), metricOwnedBy(rs[0], tn, "b", "b_metric_")
	rs[1].srv.Close()
	wr := &prompb.WriteRequest{Timeseries: append(seriesOf(ma, "u1"), seriesOf(mb, "u1", "u2")...)}
	body := encode(wr)
	if code := postTo(t, rs[0].srv.URL, wr); code != http.StatusNoContent {
		t.Fatalf("write with the owner down: %d, want 204", code)
	}
	if n := rs[0].up.forwarded(); n != 1 || !bytes.Equal(rs[0].up.last(), body) {
		t.Errorf("forwarded %d requests; want the one the client sent, as it came", n)
	}
}

// A part routed here to be decided comes uncompressed, and its body is the
// request: a later request that reuses the same pooled buffers must still
// decompress into a buffer of its own.
func TestDecidedPartThenSnappyRequest(t *testing.T) {
	up := newFakeUpstream(t)
	h := newTestHandler(t, up.srv.URL, Config{}, 5*time.Second)
	big := &prompb.WriteRequest{Timeseries: seriesOf("decided_metric", strings.Split(strings.Repeat("u,", 400), ",")[:400]...)}
	raw := big.MarshalProtobuf(nil)
	for i := range 10 {
		req := httptest.NewRequest(http.MethodPost, "/insert/1/prometheus/api/v1/write", bytes.NewReader(raw))
		req.Header.Set("Content-Encoding", "identity")
		req.Header.Set("Content-Type", "application/x-protobuf")
		req = req.WithContext(RoutedContext(req.Context(), routedDecide))
		rec := httptest.NewRecorder()
		h.ServeWrite(rec, req, tenant.MustParse("1"))
		if rec.Code != http.StatusNoContent || rec.Header().Get(unchangedHeader) != "1" {
			t.Fatalf("round %d: decided part: %d %q", i, rec.Code, rec.Body.String())
		}
		want := &prompb.WriteRequest{Timeseries: seriesOf("plain_metric", "r"+strconv.Itoa(i))}
		if rec := post(h, encode(want), nil); rec.Code != http.StatusNoContent {
			t.Fatalf("round %d: snappy request after it: %d %q", i, rec.Code, rec.Body.String())
		}
		got := forwardedSeries(t, up)
		if w := fmt.Sprint(want.Timeseries[0].Labels); len(got) != i+1 || !slices.Contains(got, w) {
			t.Fatalf("round %d: VictoriaMetrics got %v, want %s among %d", i, got, w, i+1)
		}
	}
	// An uncompressed body is refused unless another replica routed it.
	if rec := post(h, raw, map[string]string{"Content-Encoding": "identity"}); rec.Code != http.StatusUnsupportedMediaType {
		t.Errorf("identity from a client: %d, want 415", rec.Code)
	}
}

// An owner of a version that does not decide parts refuses the uncompressed
// body with 415 before processing anything (as during a rolling upgrade): it
// is sent its part to forward, and the rest goes without it.
func TestDecideFallsBackForAnOlderOwner(t *testing.T) {
	rs := twoReplicasWith(t, limits.Default())
	tn := tenant.MustParse("1")
	ma, mb := metricOwnedBy(rs[0], tn, "a", "a_metric_"), metricOwnedBy(rs[0], tn, "b", "b_metric_")
	current := rs[1].srv.Config.Handler
	rs[1].srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Header.Get("Content-Encoding") == "identity" {
			http.Error(w, `unsupported Content-Encoding "identity"`, http.StatusUnsupportedMediaType)
			return
		}
		if req.Header.Get(RoutedHeader) == routedDecide {
			t.Error("a part to decide reached the older owner compressed")
		}
		current.ServeHTTP(w, req)
	})
	wr := &prompb.WriteRequest{Timeseries: append(seriesOf(ma, "u1"), seriesOf(mb, "u1", "u2")...)}
	if code := postTo(t, rs[0].srv.URL, wr); code != http.StatusNoContent {
		t.Fatalf("write: %d", code)
	}
	if got, want := forwardedSeries(t, rs[0].up), []string{fmt.Sprint(seriesOf(ma, "u1")[0].Labels)}; !slices.Equal(got, want) {
		t.Errorf("the receiving replica forwarded %v, want %v: the older owner writes its own part", got, want)
	}
	want := []string{fmt.Sprint(seriesOf(mb, "u1")[0].Labels), fmt.Sprint(seriesOf(mb, "u2")[0].Labels)}
	slices.Sort(want)
	if got := forwardedSeries(t, rs[1].up); !slices.Equal(got, want) {
		t.Errorf("the older owner forwarded %v, want %v", got, want)
	}
}

// An owner that drops the connection without answering (killed with the
// connection open): a part it was only to decide is decided here.
func TestDecidedOwnerDropsTheConnection(t *testing.T) {
	rs := twoReplicasWith(t, limits.Default())
	tn := tenant.MustParse("1")
	ma, mb := metricOwnedBy(rs[0], tn, "a", "a_metric_"), metricOwnedBy(rs[0], tn, "b", "b_metric_")
	rs[1].srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	wr := &prompb.WriteRequest{Timeseries: append(seriesOf(ma, "u1"), seriesOf(mb, "u1", "u2")...)}
	body := encode(wr)
	if code := postTo(t, rs[0].srv.URL, wr); code != http.StatusNoContent {
		t.Fatalf("write with the owner dropping the connection: %d, want 204", code)
	}
	if n := rs[0].up.forwarded(); n != 1 || !bytes.Equal(rs[0].up.last(), body) {
		t.Errorf("forwarded %d requests; want the one the client sent, as it came", n)
	}
}
