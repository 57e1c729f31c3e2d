package ingest

import (
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardguard/cardguard/internal/relabel"
	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/upstream"
)

// fakeStreams takes every series of one metric, for tenants it has rules for,
// and records what it was given.
type fakeStreams struct {
	metric  string
	tenants map[tenant.ID]bool

	mu     sync.Mutex
	pushes int
	seen   []string // labels and samples of each series pushed
}

func (f *fakeStreams) Has(t tenant.ID) bool { return f.tenants[t] }

func (f *fakeStreams) Push(_ tenant.ID, tss []prompb.TimeSeries, matched []uint32) []uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pushes++
	matched = append(matched[:0], make([]uint32, len(tss))...)
	for i, ts := range tss {
		var b strings.Builder
		for _, l := range ts.Labels {
			b.WriteString(l.Name + "=" + l.Value + ",")
			if l.Name == "__name__" && l.Value == f.metric {
				matched[i] = 1
			}
		}
		for _, s := range ts.Samples {
			b.WriteString(" " + strconv.FormatFloat(s.Value, 'g', -1, 64))
		}
		f.seen = append(f.seen, b.String())
	}
	return matched
}

// TestStreamRulesInPipeline: for a tenant with rules, the series a rule takes
// are pushed with their labels as forwarded (after relabeling) and their
// samples, and are not forwarded; the rest is. The second request goes through
// the series cache's fast path and must do the same. A tenant without rules
// gets its original bytes forwarded and costs no push.
func TestStreamRulesInPipeline(t *testing.T) {
	t.Parallel()
	cfgs, err := relabel.ParseConfigs([]byte("- action: labeldrop\n  regex: az\n"))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := relabel.Compile(cfgs)
	if err != nil {
		t.Fatal(err)
	}
	series := func(name, az, user string, v float64) prompb.TimeSeries {
		return prompb.TimeSeries{
			Labels:  []prompb.Label{{Name: "__name__", Value: name}, {Name: "az", Value: az}, {Name: "user_id", Value: user}},
			Samples: []prompb.Sample{{Value: v, Timestamp: 1000}, {Value: v + 1, Timestamp: 2000}},
		}
	}
	body := encode(&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series("req_total", "a", "u1", 10), series("up", "a", "u1", 1), series("req_total", "b", "u2", 20),
	}})
	for _, withRules := range []bool{true, false} {
		up := newFakeUpstream(t)
		scheme, _ := upstream.New(upstream.Config{Mode: upstream.ModeCluster, InsertURL: up.srv.URL, SelectURL: up.srv.URL, Timeout: 5 * time.Second})
		streams := &fakeStreams{metric: "req_total", tenants: map[tenant.ID]bool{tenant.MustParse("1"): withRules}}
		st := Stages{Streams: streams}
		if withRules {
			st.Rules = staticRules{rules}
		}
		h := New(Config{CacheWindow: time.Hour}, scheme, st, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
		for range 2 {
			if rec := post(h, body, nil); rec.Code != 204 {
				t.Fatalf("status %d %s", rec.Code, rec.Body)
			}
		}
		if !withRules {
			if streams.pushes != 0 || string(up.last()) != string(body) {
				t.Errorf("without rules: %d pushes, original bytes forwarded: %v", streams.pushes, string(up.last()) == string(body))
			}
			continue
		}
		want := []string{"__name__=req_total,user_id=u1, 10 11", "__name__=up,user_id=u1, 1 2", "__name__=req_total,user_id=u2, 20 21"}
		if streams.pushes != 2 || len(streams.seen) != 6 {
			t.Fatalf("%d pushes of %d series: %q", streams.pushes, len(streams.seen), streams.seen)
		}
		for i, s := range streams.seen {
			if s != want[i%3] {
				t.Errorf("push %d series %d: %q, want %q", i/3, i%3, s, want[i%3])
			}
		}
		for i := range 2 {
			var wru prompb.WriteRequestUnmarshaler
			wr, err := wru.UnmarshalProtobuf(mustDecode(up.bodies[i]))
			if err != nil {
				t.Fatal(err)
			}
			if len(wr.Timeseries) != 1 || wr.Timeseries[0].Labels[0].Value != "up" || len(wr.Timeseries[0].Labels) != 2 {
				t.Errorf("request %d forwarded %v, want up{user_id} alone", i, wr.Timeseries)
			}
		}
	}
}
