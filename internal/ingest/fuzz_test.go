package ingest

import (
	"bytes"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/golang/snappy"

	"github.com/cardguard/cardguard/internal/cardinality"
	"github.com/cardguard/cardguard/internal/guard"
	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/relabel"
)

// lastBody is an upstream that keeps only the last body it was sent. A fuzz worker
// runs one input at a time, so the last body belongs to the current input.
type lastBody struct {
	srv  *httptest.Server
	mu   sync.Mutex
	body []byte
}

func newLastBody(tb testing.TB) *lastBody {
	lb := &lastBody{}
	lb.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		lb.mu.Lock()
		lb.body = b
		lb.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	tb.Cleanup(lb.srv.Close)
	return lb
}

func (lb *lastBody) take() []byte {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	b := lb.body
	lb.body = nil
	return b
}

// forwardedSamples decodes a forwarded body as 1.0 and counts its samples; a body
// VictoriaMetrics could not read fails the test.
func forwardedSamples(t *testing.T, body []byte) int {
	t.Helper()
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		t.Fatalf("forwarded body is not snappy: %v", err)
	}
	var wru prompb.WriteRequestUnmarshaler
	wr, err := wru.UnmarshalProtobuf(raw)
	if err != nil {
		t.Fatalf("forwarded body is not a 1.0 WriteRequest: %v", err)
	}
	n := 0
	for i := range wr.Timeseries {
		n += len(wr.Timeseries[i].Samples)
	}
	return n
}

// realPayloads returns the remote-write bodies captured from a real Prometheus
// under testdata/ (snappy-compressed, as sent) whose names match pattern.
func realPayloads(tb testing.TB, pattern string) [][]byte {
	tb.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", pattern))
	if err != nil {
		tb.Fatal(err)
	}
	var out [][]byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// FuzzRemoteWrite1 runs arbitrary bytes through the whole 1.0 handler path: read,
// snappy, decode, validate, stages, forward. Nothing may panic, every answer is a
// 204 or a 4xx, and whatever is forwarded must be a WriteRequest VictoriaMetrics
// can read.
func FuzzRemoteWrite1(f *testing.F) {
	stale := math.Float64frombits(0x7ff0000000000002)
	seeds := [][]byte{
		mustDecode(makeRequest(3, 4)),
		mustDecode(makeRequest(1, 1)),
		(&prompb.WriteRequest{
			Timeseries: []prompb.TimeSeries{{
				Labels:  []prompb.Label{{Name: "job", Value: "x"}, {Name: "__name__", Value: "up"}},
				Samples: []prompb.Sample{{Value: stale, Timestamp: 5}, {Value: math.Inf(-1), Timestamp: -1}},
			}},
			Metadata: []prompb.MetricMetadata{{Type: prompb.MetricTypeGauge, MetricFamilyName: "up", Help: "Up."}},
		}).MarshalProtobuf(nil),
		{},
	}
	for _, p := range realPayloads(f, "prometheus-rw1-*.snappy") {
		seeds = append(seeds, mustDecode(p))
	}
	for _, s := range seeds {
		f.Add(s, false)
		f.Add(snappy.Encode(nil, s), true)
	}
	up := newLastBody(f)
	cfg := Config{MaxRequestBytes: 1 << 20, MaxDecodedBytes: 4 << 20}
	h := newTestHandler(f, up.srv.URL, cfg, 5*time.Second)
	// The same handler with a rule that removes a label, so that requests are
	// rewritten: what it forwards must be what the plain one forwards, without
	// the label.
	hr := newTestHandler(f, up.srv.URL, cfg, 5*time.Second)
	cfgs, err := relabel.ParseConfigs([]byte("- action: labeldrop\n  regex: job\n"))
	if err != nil {
		f.Fatal(err)
	}
	rules, err := relabel.Compile(cfgs)
	if err != nil {
		f.Fatal(err)
	}
	hr.stages.Rules = staticRules{rules}
	// Every other stage on too, with limits far above anything a fuzz input
	// sends, so that nothing is cut but the cached paths are taken.
	tracker, err := cardinality.New(cardinality.Config{})
	if err != nil {
		f.Fatal(err)
	}
	def := limits.Default()
	def.MaxSeries, def.MaxSeriesPerMetric = 1<<40, 1<<40
	def.LabelGuard.MaxValuesPerLabel = 1 << 40
	def.MaxLabelsPerSeries, def.MaxLabelNameLength, def.MaxLabelValueLength = 1<<20, 1<<30, 1<<30
	registry, err := limits.NewRegistry(def, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		f.Fatal(err)
	}
	hr.stages.Observer, hr.stages.Guard = tracker, guard.New(guard.Options{})
	hr.stages.Limits, hr.stages.Enforcer = registry, limits.NewEnforcer(limits.EnforcerOptions{})
	f.Fuzz(func(t *testing.T, data []byte, compressed bool) {
		body := data
		if !compressed {
			// Most inputs should reach the protobuf decoder, not die in snappy.
			body = snappy.Encode(nil, data)
		}
		rec := post(h, body, nil)
		plain := -1
		switch rec.Code {
		case http.StatusNoContent:
			if b := up.take(); b != nil {
				plain = forwardedSamples(t, b)
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			if b := up.take(); b != nil {
				t.Fatalf("status %d but a body was forwarded", rec.Code)
			}
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		rec2 := post(hr, body, nil)
		b := up.take()
		if rec2.Code != rec.Code {
			t.Fatalf("with a labeldrop rule: status %d, without: %d", rec2.Code, rec.Code)
		}
		if rec2.Code != http.StatusNoContent {
			return
		}
		if (b == nil) != (plain < 0) {
			t.Fatalf("forwarded %v with the rule, %v without", b != nil, plain >= 0)
		}
		if b == nil {
			return
		}
		if n := forwardedSamples(t, b); n != plain {
			t.Fatalf("forwarded %d samples with the rule, %d without", n, plain)
		}
		var wru prompb.WriteRequestUnmarshaler
		wr, _ := wru.UnmarshalProtobuf(mustDecode(b))
		for _, ts := range wr.Timeseries {
			for _, l := range ts.Labels {
				if l.Name == "job" {
					t.Fatalf("label job forwarded: %v", ts.Labels)
				}
			}
		}
	})
}

// FuzzRemoteWrite2 runs arbitrary bytes as remote write 2.0 through the whole
// handler. Beyond never panicking: a 2xx must carry the written headers, and the
// samples it says were written must be exactly the samples forwarded as 1.0.
func FuzzRemoteWrite2(f *testing.F) {
	good, _ := goodV2()
	withExemplars, _ := goodV2()
	withExemplars.series[1].exemplars = 1
	st := newSymtab()
	odd := &v2Req{series: []v2Series{{refs: st.refs("__name__", "up", "job"), samples: []prompb.Sample{{Value: 1, Timestamp: 1}}}}}
	odd.symbols = st.syms
	hist := &v2Req{symbols: st.syms, series: []v2Series{{refs: st.refs("__name__", "up"), histograms: 1}}}
	seeds := [][]byte{good.marshal(), withExemplars.marshal(), odd.marshal(), hist.marshal(), {}}
	for _, p := range realPayloads(f, "prometheus-rw2-*.snappy") {
		seeds = append(seeds, mustDecode(p))
	}
	for _, s := range seeds {
		f.Add(s)
	}
	up := newLastBody(f)
	h := newTestHandler(f, up.srv.URL, Config{MaxRequestBytes: 1 << 20, MaxDecodedBytes: 4 << 20}, 5*time.Second)
	hdr := map[string]string{"Content-Type": contentTypeV2}
	f.Fuzz(func(t *testing.T, data []byte) {
		rec := post(h, snappy.Encode(nil, data), hdr)
		switch rec.Code {
		case http.StatusNoContent:
			written, err := strconv.Atoi(rec.Header().Get(headerSamplesWritten))
			if err != nil {
				t.Fatalf("2xx without a valid %s: %v", headerSamplesWritten, err)
			}
			for _, k := range []string{headerHistogramsWritten, headerExemplarsWritten} {
				if rec.Header().Get(k) != "0" {
					t.Fatalf("%s = %q, want 0", k, rec.Header().Get(k))
				}
			}
			forwarded := 0
			if b := up.take(); b != nil {
				if bytes.Equal(b, snappy.Encode(nil, data)) && len(data) > 0 {
					t.Fatal("the 2.0 body was forwarded as it came")
				}
				forwarded = forwardedSamples(t, b)
			}
			if written != forwarded {
				t.Fatalf("%s says %d, but %d samples were forwarded", headerSamplesWritten, written, forwarded)
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			if b := up.take(); b != nil {
				t.Fatalf("status %d but a body was forwarded", rec.Code)
			}
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	})
}

// FuzzDecodeV2 hits the 2.0 decoder alone, fast, reusing one decoder as the
// handler's pool does: whatever it accepts must be self-consistent.
func FuzzDecodeV2(f *testing.F) {
	good, _ := goodV2()
	f.Add(good.marshal())
	f.Add([]byte{})
	for _, p := range realPayloads(f, "prometheus-rw2-*.snappy") {
		f.Add(mustDecode(p))
	}
	var d v2Decoder
	f.Fuzz(func(t *testing.T, data []byte) {
		wr, err := d.decode(data)
		if err != nil {
			if statusOf(err) != http.StatusBadRequest {
				t.Fatalf("error %v has status %d, want 400", err, statusOf(err))
			}
			return
		}
		for i := range wr.Timeseries {
			ts := &wr.Timeseries[i]
			if len(ts.Samples) == 0 {
				t.Fatalf("series %d has no samples", i)
			}
			if cap(ts.Labels) != len(ts.Labels) || cap(ts.Samples) != len(ts.Samples) {
				t.Fatalf("series %d shares capacity with the next one", i)
			}
		}
		// Re-encoding must work: it is what the handler forwards.
		_ = wr.MarshalProtobuf(nil)
	})
}
