package queryaudit

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cardguard/cardguard/internal/tenant"
)

// testClock is a settable clock for RecorderConfig.Now.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// namesFunc adapts a function to MetricNamer.
type namesFunc func(tenant.ID) []string

func (f namesFunc) MetricNames(t tenant.ID) []string { return f(t) }

// labelledNames knows metrics and the distinct values of their labels, as the
// cardinality tracker does; a metric without an entry has unknown labels.
type labelledNames map[string]map[string]int64

func (l labelledNames) MetricNames(tenant.ID) []string { return []string{"a1", "a2", "a3", "b"} }

func (l labelledNames) LabelValueCount(_ tenant.ID, metric, label string) (int64, bool) {
	ls, ok := l[metric]
	if !ok {
		return 0, false
	}
	return ls[label], true
}

var (
	t1    = tenant.MustParse("1")
	t2    = tenant.MustParse("2:7")
	epoch = time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)
)

func newTestRecorder(t *testing.T, cfg RecorderConfig, names MetricNamer) (*Recorder, *testClock, *prometheus.Registry) {
	t.Helper()
	clock := &testClock{t: epoch}
	cfg.Now = clock.Now
	reg := prometheus.NewRegistry()
	return NewRecorder(cfg, names, reg, nil), clock, reg
}

func query(q string) url.Values { return url.Values{"query": {q}} }

func match(m ...string) url.Values { return url.Values{"match[]": m} }

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

func findTenant(s Snapshot, id tenant.ID) *TenantSnapshot {
	for i := range s.Tenants {
		if s.Tenants[i].Tenant == id {
			return &s.Tenants[i]
		}
	}
	return nil
}

func findMetric(ts *TenantSnapshot, name string) *MetricSnapshot {
	if ts == nil {
		return nil
	}
	for i := range ts.Metrics {
		if ts.Metrics[i].Name == name {
			return &ts.Metrics[i]
		}
	}
	return nil
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func total(d []DayCount) uint64 { return dailyCounts(d).sum(0) }

func TestRecordAttribution(t *testing.T) {
	t.Parallel()
	r, _, reg := newTestRecorder(t, RecorderConfig{}, namesFunc(func(tenant.ID) []string {
		return []string{"node_load1", "node_load5", "go_goroutines", "up"}
	}))
	grafana := hdr("X-Dashboard-Uid", "abc", "X-Dashboard-Title", "Nodes", "X-Panel-Id", "4",
		"X-Panel-Title", "Load", "X-Grafana-User", "alice", "User-Agent", "Grafana/11.0")
	alert := hdr("X-Rule-Uid", "r1", "X-Rule-Name", "NodeDown", "X-Rule-Folder", "infra", "FromAlert", "true")

	r.Record(t1, "query_range", query(`sum by (instance) (node_load1{job="node"})`), grafana, epoch)
	r.Record(t1, "query", query(`up == 0`), alert, epoch.Add(time.Minute))
	r.Record(t1, "query", query(`up`), hdr("User-Agent", "curl/8"), epoch.Add(2*time.Minute))
	r.Record(t1, "series", match(`{__name__=~"node_load.*"}`), nil, epoch)
	r.Record(t1, "label/device/values", match(`go_goroutines`), nil, epoch)
	r.Record(t1, "label_values", match(`go_goroutines{instance="x"}`), nil, epoch)
	r.Record(t1, "query", query(`sum(x`), nil, epoch) // no parser reads it: unparsed
	r.Record(t1, "query", query(`1+1`), nil, epoch)   // no metrics
	r.Record(t2, "export", match(`up{job="b"}`), nil, epoch)
	r.Flush()

	snap := r.Export()
	ts := findTenant(snap, t1)
	if ts == nil {
		t.Fatal("tenant 1 missing")
	}
	if got := total(ts.Queries); got != 8 {
		t.Errorf("tenant queries = %d, want 8", got)
	}
	if got := total(ts.Unparsed); got != 1 {
		t.Errorf("tenant unparsed = %d, want 1", got)
	}

	load1 := findMetric(ts, "node_load1")
	if load1 == nil {
		t.Fatal("node_load1 missing")
	}
	if total(load1.Queries) != 2 || total(load1.AllLabels) != 1 {
		t.Errorf("node_load1 queries %d allLabels %d, want 2 and 1", total(load1.Queries), total(load1.AllLabels))
	}
	var labelNames []string
	for _, l := range load1.Labels {
		labelNames = append(labelNames, l.Name)
	}
	if !slices.Equal(labelNames, []string{"instance", "job"}) {
		t.Errorf("node_load1 labels %q", labelNames)
	}
	if got := load1.Labels[0].LastUsed; !reflect.DeepEqual(got, map[string]int64{"grouping": epoch.UnixMilli()}) {
		t.Errorf("instance lastUsed %v", got)
	}
	wantSources := []Source{
		{Kind: "grafana", DashboardUID: "abc", DashboardTitle: "Nodes", PanelID: "4", PanelTitle: "Load", User: "alice"},
		{Kind: "unknown"},
	}
	var gotSources []Source
	for _, s := range load1.Sources {
		gotSources = append(gotSources, s.Source)
	}
	if !reflect.DeepEqual(gotSources, wantSources) {
		t.Errorf("node_load1 sources\n got %+v\nwant %+v", gotSources, wantSources)
	}
	if findMetric(ts, "node_load5") == nil {
		t.Error("regex selector was not resolved to node_load5")
	}

	up := findMetric(ts, "up")
	if up == nil || total(up.Queries) != 2 || up.LastQueried != epoch.Add(2*time.Minute).UnixMilli() {
		t.Fatalf("up usage %+v", up)
	}
	if up.Sources[0].Source != (Source{Kind: "alert", RuleUID: "r1", RuleName: "NodeDown", RuleFolder: "infra"}) ||
		up.Sources[1].Source != (Source{Kind: "client", UserAgent: "curl/8"}) {
		t.Errorf("up sources %+v", up.Sources)
	}

	gor := findMetric(ts, "go_goroutines")
	if gor == nil || len(gor.Labels) != 2 || gor.Labels[0].Name != "device" || gor.Labels[0].LastUsed["values"] == 0 ||
		gor.Labels[1].Name != "instance" || gor.Labels[1].LastUsed["matcher"] == 0 {
		t.Errorf("go_goroutines usage %+v", gor)
	}

	if m := findMetric(findTenant(snap, t2), "up"); m == nil || total(m.AllLabels) != 1 {
		t.Errorf("tenant 2 export of up not recorded as all labels: %+v", m)
	}
	if got := counterValue(t, r.m.recorded); got != 8 {
		t.Errorf("recorded events = %v, want 8", got)
	}
	if got := counterValue(t, r.m.unparsed); got != 1 {
		t.Errorf("unparsed events = %v, want 1", got)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var series int
	for _, mf := range mfs {
		if mf.GetName() == "cardguard_query_usage_events_total" {
			series = len(mf.GetMetric())
		}
	}
	if series != 4 {
		t.Errorf("events_total has %d series, want 4", series)
	}
}

func TestRecordIgnores(t *testing.T) {
	t.Parallel()
	r, _, _ := newTestRecorder(t, RecorderConfig{}, nil)
	r.Record(t1, "labels", url.Values{}, nil, epoch)
	r.Record(t1, "label/job/values", url.Values{}, nil, epoch)
	r.Record(t1, "metadata", url.Values{"metric": {"up"}}, nil, epoch)
	r.Record(t1, "status/buildinfo", nil, nil, epoch)
	r.Record(t1, "query", url.Values{}, nil, epoch)
	r.Flush()
	if s := r.Export(); len(s.Tenants) != 0 {
		t.Errorf("recorded %+v", s.Tenants)
	}
}

func TestRecordCopiesForm(t *testing.T) {
	t.Parallel()
	r, _, _ := newTestRecorder(t, RecorderConfig{}, nil)
	form := match(`up`)
	r.Record(t1, "series", form, nil, epoch)
	form["match[]"][0] = `changed`
	r.Flush()
	ts := findTenant(r.Export(), t1)
	if findMetric(ts, "up") == nil || findMetric(ts, "changed") != nil {
		t.Errorf("Record kept the caller's form: %+v", ts)
	}
}

func TestRecordDropsWhenFull(t *testing.T) {
	t.Parallel()
	r, _, _ := newTestRecorder(t, RecorderConfig{QueueSize: 2}, nil)
	for range 5 {
		r.Record(t1, "query", query(`up`), nil, epoch)
	}
	if got := counterValue(t, r.m.dropped); got != 3 {
		t.Errorf("dropped = %v, want 3", got)
	}
	r.Flush()
	ts := findTenant(r.Export(), t1)
	if ts == nil || total(ts.Dropped) != 3 || total(ts.Queries) != 2 {
		t.Errorf("tenant usage after drops: %+v", ts)
	}
}

func TestRecordCaps(t *testing.T) {
	t.Parallel()
	r, _, _ := newTestRecorder(t, RecorderConfig{MaxTenants: 1, MaxMetricsPerTenant: 2, MaxLabelsPerMetric: 1, MaxSourcesPerMetric: 1}, nil)
	r.Record(t1, "query", query(`a{x="1", y="2"} + b + c`), hdr("User-Agent", "one"), epoch)
	r.Record(t1, "query", query(`a`), hdr("User-Agent", "two"), epoch)
	r.Record(t2, "query", query(`a`), nil, epoch)
	r.Flush()
	snap := r.Export()
	if len(snap.Tenants) != 1 || snap.TenantsOverflow != 1 {
		t.Fatalf("tenants %d overflow %d, want 1 and 1", len(snap.Tenants), snap.TenantsOverflow)
	}
	ts := &snap.Tenants[0]
	if len(ts.Metrics) != 2 || ts.MetricsOverflow != 1 {
		t.Errorf("metrics %d overflow %d, want 2 and 1", len(ts.Metrics), ts.MetricsOverflow)
	}
	a := findMetric(ts, "a")
	if a == nil || len(a.Labels) != 1 || a.LabelsOverflow != 1 || len(a.Sources) != 1 || a.SourcesOverflow != 1 {
		t.Errorf("metric a caps: %+v", a)
	}
	if got := counterValue(t, r.m.overflow.WithLabelValues("tenant")); got != 1 {
		t.Errorf("tenant overflow metric = %v", got)
	}
}

func TestResolveNameMatchers(t *testing.T) {
	t.Parallel()
	names := namesFunc(func(tenant.ID) []string { return []string{"a1", "a2", "a3", "b"} })
	labelled := labelledNames{
		"a1": {"job": 3}, "a2": {"type": 2}, "b": {"type": 4, "job": 1},
		// a3's labels went to the tracker's overflow: it may have any label.
	}
	tests := []struct {
		name       string
		names      MetricNamer
		maxNames   int
		match      string
		want       []string
		tooWide    float64
		noNamesCt  float64
		noLabelsCt float64
	}{
		{name: "regex", names: names, match: `{__name__=~"a.*"}`, want: []string{"a1", "a2", "a3"}},
		{name: "regex and negative", names: names, match: `{__name__=~"a.*", __name__!="a2"}`, want: []string{"a1", "a3"}},
		{name: "no name and no labels known credits nothing", names: names, match: `{job="x"}`, noLabelsCt: 1},
		{name: "no name credits the metrics with its labels", names: labelled, match: `{type="free"}`, want: []string{"a2", "a3", "b"}},
		{name: "no name, every label required", names: labelled, match: `{type="free", job=~".+"}`, want: []string{"a3", "b"}},
		{name: "label that may be absent requires nothing", names: labelled, match: `{job!="x", type=~"free|"}`, want: []string{"a1", "a2", "a3", "b"}},
		{name: "regex name and labels", names: labelled, match: `{__name__=~"a.*", type="free"}`, want: []string{"a2", "a3"}},
		{name: "unknown metric labels may match", names: labelled, match: `{zone="z"}`, want: []string{"a3"}},
		{name: "too wide", names: names, maxNames: 2, match: `{__name__=~"a.*"}`, tooWide: 1},
		{name: "no namer alternation", match: `{__name__=~"a1|b"}`, want: []string{"a1", "b"}},
		{name: "no namer regex", match: `{__name__=~"a.*"}`, noNamesCt: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, _, _ := newTestRecorder(t, RecorderConfig{MaxResolvedNames: tc.maxNames}, tc.names)
			r.Record(t1, "series", match(tc.match), nil, epoch)
			r.Flush()
			var got []string
			if ts := findTenant(r.Export(), t1); ts != nil {
				for _, m := range ts.Metrics {
					got = append(got, m.Name)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("credited %q, want %q", got, tc.want)
			}
			if v := counterValue(t, r.m.unresolved.WithLabelValues("too_wide")); v != tc.tooWide {
				t.Errorf("too_wide = %v, want %v", v, tc.tooWide)
			}
			if v := counterValue(t, r.m.unresolved.WithLabelValues("no_names")); v != tc.noNamesCt {
				t.Errorf("no_names = %v, want %v", v, tc.noNamesCt)
			}
			if v := counterValue(t, r.m.unresolved.WithLabelValues("no_labels")); v != tc.noLabelsCt {
				t.Errorf("no_labels = %v, want %v", v, tc.noLabelsCt)
			}
		})
	}
}

func TestRetention(t *testing.T) {
	t.Parallel()
	r, clock, _ := newTestRecorder(t, RecorderConfig{Retention: 7 * 24 * time.Hour}, nil)
	r.Record(t1, "query", query(`old`), nil, epoch)
	r.Record(t1, "query", query(`recent`), nil, epoch.Add(5*24*time.Hour))
	r.Record(t1, "query", query(`recent`), nil, epoch.Add(6*24*time.Hour))
	r.Flush()

	clock.Set(epoch.Add(6 * 24 * time.Hour)) // day 6: day 0 is still inside 7 days
	if findMetric(findTenant(r.Export(), t1), "old") == nil {
		t.Fatal("old expired too early")
	}
	clock.Set(epoch.Add(8 * 24 * time.Hour)) // window is days 2..8
	ts := findTenant(r.Export(), t1)
	if findMetric(ts, "old") != nil {
		t.Error("old did not expire")
	}
	if m := findMetric(ts, "recent"); m == nil || total(m.Queries) != 2 {
		t.Errorf("recent = %+v", m)
	}
	if got := total(ts.Queries); got != 2 {
		t.Errorf("tenant queries in window = %d, want 2", got)
	}
	clock.Set(epoch.Add(30 * 24 * time.Hour))
	if s := r.Export(); len(s.Tenants) != 0 {
		t.Errorf("everything should have expired: %+v", s.Tenants)
	}
}

func TestSaveLoadMerge(t *testing.T) {
	t.Parallel()
	a, _, _ := newTestRecorder(t, RecorderConfig{}, nil)
	a.Record(t1, "query", query(`sum by (job) (up)`), hdr("X-Dashboard-Uid", "d"), epoch)
	a.Record(t2, "query", query(`x`), nil, epoch)
	a.Record(t1, "query", query(`WITH (x = 1`), nil, epoch)
	a.Flush()
	path := filepath.Join(t.TempDir(), "usage.json")
	if err := a.SaveFile(path); err != nil {
		t.Fatal(err)
	}

	b, _, _ := newTestRecorder(t, RecorderConfig{}, nil)
	if err := b.LoadFile(path); err != nil {
		t.Fatal(err)
	}
	if got, want := b.Export(), a.Export(); !reflect.DeepEqual(got, want) {
		t.Fatalf("loaded state differs\n got %+v\nwant %+v", got, want)
	}

	// A second replica's snapshot adds up.
	if err := b.Merge(a.Export()); err != nil {
		t.Fatal(err)
	}
	up := findMetric(findTenant(b.Export(), t1), "up")
	if up == nil || total(up.Queries) != 2 || total(up.Labels[0].Queries) != 2 || total(up.Sources[0].Queries) != 2 {
		t.Errorf("merged up = %+v", up)
	}
	if got := total(findTenant(b.Export(), t1).Unparsed); got != 2 {
		t.Errorf("merged unparsed = %d", got)
	}

	if err := b.Merge(Snapshot{Version: 99}); err == nil {
		t.Error("Merge accepted an unknown version")
	}
	if err := b.LoadFile(filepath.Join(t.TempDir(), "missing.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadFile(missing) = %v, want fs.ErrNotExist", err)
	}
	if err := a.SaveFile(filepath.Join(t.TempDir(), "no", "such", "dir", "usage.json")); err == nil {
		t.Error("SaveFile into a missing directory succeeded")
	}
}

func TestSourceClipping(t *testing.T) {
	t.Parallel()
	long := string(make([]byte, 1000))
	s := sourceFromHeader(hdr("User-Agent", "ua-"+long)).keep()
	if len(s.UserAgent) > maxSourceField+3 {
		t.Errorf("user agent kept %d bytes", len(s.UserAgent))
	}
}

// TestRunConcurrent exercises Record from many goroutines while Run processes and
// reports read; run it with -race.
func TestRunConcurrent(t *testing.T) {
	t.Parallel()
	r, _, _ := newTestRecorder(t, RecorderConfig{QueueSize: 64}, namesFunc(func(tenant.ID) []string { return []string{"up"} }))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				r.Record(t1, "query", query(`sum by (job) (up)`), hdr("User-Agent", "g"), epoch)
				if i%50 == 0 && g == 0 {
					_ = r.MetricsReport(t1, nil, "all", "series", "desc", 0, 10, 0)
					_ = r.Export()
				}
			}
		}()
	}
	wg.Wait()
	cancel()
	<-done
	r.Flush()
	ts := findTenant(r.Export(), t1)
	if ts == nil {
		t.Fatal("nothing recorded")
	}
	if got := total(ts.Queries) + total(ts.Dropped); got != 800 {
		t.Errorf("recorded %d + dropped %d, want 800 in all", total(ts.Queries), total(ts.Dropped))
	}
}

// TestRecordBoundsNames: a made-up name longer than MaxNameBytes (the default is
// cardguard's max_label_name_length) is never kept, whatever its length; names at
// the cap are.
func TestRecordBoundsNames(t *testing.T) {
	t.Parallel()
	r, _, _ := newTestRecorder(t, RecorderConfig{}, nil)
	long := "m" + strings.Repeat("x", 60<<10) // under MaxQueryBytes, so it parses
	atCap := strings.Repeat("n", 256)
	longLabel := "l" + strings.Repeat("y", 256)
	r.Record(t1, "query", query(long+`{a="b"}`), nil, epoch)
	r.Record(t1, "query", query(`sum by (`+longLabel+`) (ok{`+atCap+`="1"})`), nil, epoch)
	r.Record(t1, "label/"+longLabel+"/values", match("ok"), nil, epoch)
	r.Record(t1, "query", query(atCap), nil, epoch)
	r.Flush()
	ts := findTenant(r.Export(), t1)
	if ts == nil || len(ts.Metrics) != 2 || findMetric(ts, "ok") == nil || findMetric(ts, atCap) == nil {
		t.Fatalf("metrics kept: %+v", ts)
	}
	for _, l := range findMetric(ts, "ok").Labels {
		if len(l.Name) > 256 {
			t.Errorf("label of %d bytes kept", len(l.Name))
		}
	}
	if got := counterValue(t, r.m.overflow.WithLabelValues("long_name")); got != 3 {
		t.Errorf("long_name overflow %v, want 3", got)
	}
}

// TestSaveFileCap: over MaxSnapshotBytes the metrics queried longest ago are left
// out until the file fits, and the newest stay.
func TestSaveFileCap(t *testing.T) {
	t.Parallel()
	r, _, _ := newTestRecorder(t, RecorderConfig{MaxSnapshotBytes: 16 << 10}, nil)
	for i := range 2000 {
		r.Record(t1, "query", query(fmt.Sprintf("metric_%04d", i)), nil, epoch.Add(time.Duration(i)*time.Second))
	}
	r.Flush()
	path := filepath.Join(t.TempDir(), "usage.json")
	if err := r.SaveFile(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Size() > 16<<10 {
		t.Fatalf("snapshot %v bytes (%v), cap 16 KiB", fi.Size(), err)
	}
	back, _, _ := newTestRecorder(t, RecorderConfig{}, nil)
	if err := back.LoadFile(path); err != nil {
		t.Fatal(err)
	}
	ts := findTenant(back.Export(), t1)
	if ts == nil || findMetric(ts, "metric_1999") == nil || findMetric(ts, "metric_0000") != nil || ts.MetricsOverflow == 0 {
		t.Errorf("after the cap: newest kept %v, oldest left out, overflow %d", ts != nil && findMetric(ts, "metric_1999") != nil, ts.MetricsOverflow)
	}
}
