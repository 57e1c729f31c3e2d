package ingest

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/upstream"
)

// fakeUpstream records what cardguard forwarded and answers with a chosen status.
type fakeUpstream struct {
	srv    *httptest.Server
	status atomic.Int32
	delay  atomic.Int64

	mu     sync.Mutex
	bodies [][]byte
	paths  []string
	hdrs   []http.Header
}

func newFakeUpstream(t testing.TB) *fakeUpstream {
	f := &fakeUpstream{}
	f.status.Store(http.StatusNoContent)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d := time.Duration(f.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.bodies = append(f.bodies, b)
		f.paths = append(f.paths, r.URL.RequestURI())
		f.hdrs = append(f.hdrs, r.Header.Clone())
		f.mu.Unlock()
		code := int(f.status.Load())
		if code/100 != 2 {
			http.Error(w, "upstream says no", code)
			return
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// last returns the body of the last forwarded request, or nil.
func (f *fakeUpstream) last() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.bodies) == 0 {
		return nil
	}
	return f.bodies[len(f.bodies)-1]
}

func (f *fakeUpstream) forwarded() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.bodies)
}

func newTestHandler(t testing.TB, upstreamURL string, cfg Config, timeout time.Duration) *Handler {
	t.Helper()
	scheme, err := upstream.New(upstream.Config{Mode: upstream.ModeCluster, InsertURL: upstreamURL, SelectURL: upstreamURL, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return New(cfg, scheme, Stages{}, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// makeRequest builds a remote-write 1.0 body of n series with extra labels each.
func makeRequest(n, labels int) []byte {
	wr := &prompb.WriteRequest{}
	for i := 0; i < n; i++ {
		ls := []prompb.Label{{Name: "__name__", Value: fmt.Sprintf("metric_%d", i%50)}}
		for j := 0; j < labels-1; j++ {
			ls = append(ls, prompb.Label{Name: fmt.Sprintf("label_%02d", j), Value: fmt.Sprintf("value_%d_%d", j, i)})
		}
		wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
			Labels:  ls,
			Samples: []prompb.Sample{{Value: float64(i), Timestamp: 1700000000000 + int64(i)}},
		})
	}
	return snappy.Encode(nil, wr.MarshalProtobuf(nil))
}

func encode(wr *prompb.WriteRequest) []byte { return snappy.Encode(nil, wr.MarshalProtobuf(nil)) }

func post(h *Handler, body []byte, hdr map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/insert/1/prometheus/api/v1/write", bytes.NewReader(body))
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeWrite(rec, req, tenant.MustParse("1"))
	return rec
}

// snappyHeaderOnly is a snappy block whose varint header declares 1 GiB and that
// carries no data: rejecting it must not allocate the declared size.
func snappyHeaderOnly(n uint64) []byte {
	var b []byte
	for n >= 0x80 {
		b = append(b, byte(n)|0x80)
		n >>= 7
	}
	return append(b, byte(n))
}

func TestStatuses(t *testing.T) {
	t.Parallel()
	good := makeRequest(10, 5)
	unsorted := encode(&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "job", Value: "a"}, {Name: "__name__", Value: "up"}},
		Samples: []prompb.Sample{{Value: 1, Timestamp: 1}},
	}}})
	series := func(ls ...prompb.Label) []byte {
		return encode(&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: ls, Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}}}})
	}
	tests := []struct {
		name         string
		body         []byte
		hdr          map[string]string
		upstream     int
		want         int
		wantForward  bool
		wantInBody   string
		maxBody      int64
		upstreamWait time.Duration
	}{
		{name: "ok", body: good, upstream: 204, want: 204, wantForward: true},
		{name: "upstream 200 is still 204", body: good, upstream: 200, want: 204, wantForward: true},
		{name: "unsorted labels accepted", body: unsorted, upstream: 204, want: 204, wantForward: true},
		{name: "no content-type or encoding is 1.0 snappy", body: good, hdr: map[string]string{"Content-Type": "", "Content-Encoding": ""}, upstream: 204, want: 204, wantForward: true},
		{name: "upstream 500", body: good, upstream: 500, want: 503, wantForward: true, wantInBody: "upstream answered 500"},
		{name: "upstream 503", body: good, upstream: 503, want: 503, wantForward: true},
		{name: "upstream 429 retried", body: good, upstream: 429, want: 503, wantForward: true},
		{name: "upstream 400", body: good, upstream: 400, want: 400, wantForward: true, wantInBody: "upstream says no"},
		{name: "upstream timeout", body: good, upstream: 204, upstreamWait: 2 * time.Second, want: 503, wantForward: false, wantInBody: "upstream unavailable"},
		{name: "empty body", body: nil, want: 400, wantInBody: "empty request body"},
		{name: "not snappy", body: []byte("this is not snappy at all, just text"), want: 400, wantInBody: "snappy"},
		{name: "declared length too large", body: snappyHeaderOnly(1 << 30), want: 413, wantInBody: "exceeds the limit"},
		{name: "body too large", body: good, maxBody: 16, want: 413, wantInBody: "max_request_bytes"},
		{name: "garbage protobuf", body: snappy.Encode(nil, []byte{0xff, 0xff, 0xff, 0xff, 0x0f}), want: 400, wantInBody: "cannot parse"},
		{name: "truncated protobuf", body: snappy.Encode(nil, mustDecode(good)[:37]), want: 400, wantInBody: "cannot parse"},
		{name: "gzip encoding", body: good, hdr: map[string]string{"Content-Encoding": "gzip"}, want: 415},
		{name: "json content type", body: good, hdr: map[string]string{"Content-Type": "application/json"}, want: 415},
		{name: "unknown remote write proto", body: good, hdr: map[string]string{"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v3.Request"}, want: 415, wantInBody: "v3"},
		{name: "no __name__", body: series(prompb.Label{Name: "job", Value: "x"}), want: 400, wantInBody: "no __name__"},
		{name: "empty label name", body: series(prompb.Label{Name: "", Value: "x"}, prompb.Label{Name: "__name__", Value: "up"}), want: 400, wantInBody: "empty label name"},
		{name: "duplicate label", body: series(prompb.Label{Name: "__name__", Value: "up"}, prompb.Label{Name: "a", Value: "1"}, prompb.Label{Name: "a", Value: "2"}), want: 400, wantInBody: "duplicate label name"},
		{name: "duplicate unsorted label", body: series(prompb.Label{Name: "b", Value: "1"}, prompb.Label{Name: "__name__", Value: "up"}, prompb.Label{Name: "b", Value: "2"}), want: 400, wantInBody: "duplicate label name"},
		{name: "invalid utf-8", body: series(prompb.Label{Name: "__name__", Value: "up"}, prompb.Label{Name: "a", Value: "\xff\xfe"}), want: 400, wantInBody: "UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			up := newFakeUpstream(t)
			up.status.Store(int32(tt.upstream))
			up.delay.Store(int64(tt.upstreamWait))
			cfg := Config{MaxRequestBytes: tt.maxBody}
			h := newTestHandler(t, up.srv.URL, cfg, 500*time.Millisecond)
			rec := post(h, tt.body, tt.hdr)
			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d; body %q", rec.Code, tt.want, rec.Body.String())
			}
			if got := up.forwarded() > 0; got != tt.wantForward {
				t.Errorf("forwarded = %v, want %v", got, tt.wantForward)
			}
			if tt.wantInBody != "" && !strings.Contains(rec.Body.String(), tt.wantInBody) {
				t.Errorf("body %q does not mention %q", rec.Body.String(), tt.wantInBody)
			}
			if rec.Code == 204 && rec.Body.Len() != 0 {
				t.Errorf("204 with a body: %q", rec.Body.String())
			}
		})
	}
}

func mustDecode(b []byte) []byte {
	d, err := snappy.Decode(nil, b)
	if err != nil {
		panic(err)
	}
	return d
}

func TestForwardsOriginalBytesAndHeaders(t *testing.T) {
	t.Parallel()
	up := newFakeUpstream(t)
	h := newTestHandler(t, up.srv.URL, Config{}, time.Second)
	// A stale marker must arrive bit-exact: forwarding the original bytes keeps it.
	stale := math.Float64frombits(0x7ff0000000000002)
	body := encode(&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "x"}},
		Samples: []prompb.Sample{{Value: stale, Timestamp: 5}},
	}}})
	rec := post(h, body, map[string]string{"User-Agent": "Prometheus/3.0.0", "Authorization": "Bearer client-secret"})
	if rec.Code != 204 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if !bytes.Equal(up.bodies[0], body) {
		t.Fatal("forwarded body differs from the request body")
	}
	if got, want := up.paths[0], "/insert/1:0/prometheus/api/v1/write"; got != want {
		t.Errorf("forwarded to %s, want %s", got, want)
	}
	hdr := up.hdrs[0]
	for k, want := range map[string]string{
		"Content-Encoding":                  "snappy",
		"Content-Type":                      "application/x-protobuf",
		"X-Prometheus-Remote-Write-Version": "0.1.0",
		"User-Agent":                        "Prometheus/3.0.0",
		"Authorization":                     "",
	} {
		if got := hdr.Get(k); got != want {
			t.Errorf("upstream header %s = %q, want %q", k, got, want)
		}
	}
}

func TestMethodNotAllowed(t *testing.T) {
	t.Parallel()
	h := newTestHandler(t, "http://127.0.0.1:1", Config{}, time.Second)
	rec := httptest.NewRecorder()
	h.ServeWrite(rec, httptest.NewRequest(http.MethodGet, "/api/v1/write", nil), tenant.ID{})
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "POST" {
		t.Fatalf("GET: status %d, Allow %q", rec.Code, rec.Header().Get("Allow"))
	}
}

func TestUpstreamRefused(t *testing.T) {
	t.Parallel()
	up := newFakeUpstream(t)
	url := up.srv.URL
	up.srv.Close()
	h := newTestHandler(t, url, Config{}, time.Second)
	if rec := post(h, makeRequest(3, 3), nil); rec.Code != 503 {
		t.Fatalf("upstream refused: status %d, want 503", rec.Code)
	}
}

func TestDecompressDoesNotAllocateDeclaredSize(t *testing.T) {
	body := snappyHeaderOnly(1 << 30)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < 10; i++ {
		if _, err := decompress(nil, body, 64<<20); statusOf(err) != http.StatusRequestEntityTooLarge {
			t.Fatalf("got %v, want a 413", err)
		}
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Fatalf("rejecting a block that declares 1 GiB allocated %d bytes", grew)
	}
}
