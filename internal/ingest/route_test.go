package ingest

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
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
	t.Helper()
	var rs [2]*replica
	for i, id := range []string{"a", "b"} {
		r := &replica{ring: ring.New(id), types: aggregate.NewTypes(100), up: newFakeUpstream(t)}
		scheme, err := upstream.New(upstream.Config{Mode: upstream.ModeCluster, InsertURL: r.up.srv.URL, SelectURL: r.up.srv.URL, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		def := limits.Default()
		def.LabelGuard.MaxValuesPerLabel = 1
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
		}, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
		r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if req.Header.Get(RoutedHeader) != "" {
				req = req.WithContext(WithRouted(req.Context()))
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
			if req.Header.Get(RoutedHeader) != "" {
				req = req.WithContext(WithRouted(req.Context()))
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
