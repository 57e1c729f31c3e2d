package cardinality

import (
	"bytes"
	"encoding/gob"
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/cespare/xxhash/v2"

	"github.com/cardguard/cardguard/internal/tenant"
)

// clock is a settable clock for Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 1, 2, 3, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newTracker(tb testing.TB, cfg Config) (*Tracker, *clock) {
	tb.Helper()
	c := newClock()
	if cfg.Now == nil {
		cfg.Now = c.Now
	}
	tr, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return tr, c
}

// series builds a label set the way ingest sees it: sorted, __name__ included.
func series(metric string, kv ...string) []prompb.Label {
	ls := []prompb.Label{{Name: metricNameLabel, Value: metric}}
	for i := 0; i+1 < len(kv); i += 2 {
		ls = append(ls, prompb.Label{Name: kv[i], Value: kv[i+1]})
	}
	return ls
}

func hashLabels(ls []prompb.Label) uint64 {
	d := xxhash.New()
	for _, l := range ls {
		_, _ = d.WriteString(l.Name)
		_, _ = d.Write([]byte{0})
		_, _ = d.WriteString(l.Value)
		_, _ = d.Write([]byte{0})
	}
	return d.Sum64()
}

func observe(tr *Tracker, tn tenant.ID, ls []prompb.Label) {
	tr.Observe(tn, ls[0].Value, ls, hashLabels(ls))
}

func within(got, want int64, tol float64) bool {
	return math.Abs(float64(got-want)) <= tol*float64(want)
}

func TestAccuracy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		series int
		values int // distinct values of label "v"
	}{
		{series: 1e3, values: 1e3},
		{series: 1e5, values: 9999},
		{series: 1e6, values: 5000},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.series), func(t *testing.T) {
			t.Parallel()
			if testing.Short() && tt.series > 1e5 {
				t.Skip("slow")
			}
			tr, _ := newTracker(t, Config{})
			tn := tenant.ID{AccountID: 1}
			for i := range tt.series {
				ls := series("m", "id", strconv.Itoa(i), "v", strconv.Itoa(i%tt.values))
				observe(tr, tn, ls)
			}
			tr.Refresh()
			sum, _ := tr.Tenant(tn)
			if !within(sum.ActiveSeries, int64(tt.series), 0.02) {
				t.Errorf("tenant series = %d, want %d ±2%%", sum.ActiveSeries, tt.series)
			}
			ms, ok := tr.MetricSeries(tn, "m")
			if !ok || !within(ms, int64(tt.series), 0.02) {
				t.Errorf("metric series = %d, want %d ±2%%", ms, tt.series)
			}
			lv := tr.LabelValues(tn, "m")
			if !within(lv["v"], int64(tt.values), 0.01) {
				t.Errorf("label v values = %d, want %d ±1%%", lv["v"], tt.values)
			}
			if !within(lv["id"], int64(tt.series), 0.02) {
				t.Errorf("label id values = %d, want %d ±2%%", lv["id"], tt.series)
			}
			t.Logf("series %d: tenant %d metric %d, id %d, v %d/%d", tt.series, sum.ActiveSeries, ms, lv["id"], lv["v"], tt.values)
		})
	}
}

func TestLabelValueAccuracy(t *testing.T) {
	t.Parallel()
	tr, _ := newTracker(t, Config{})
	tn := tenant.ID{AccountID: 2}
	counts := []int{1, 10, 100, 1000, 3000, 6000, 9999}
	const n = 20000
	for i := range n {
		kv := []string{"id", strconv.Itoa(i)}
		for _, c := range counts {
			kv = append(kv, "l"+strconv.Itoa(c), strconv.Itoa(i%c))
		}
		observe(tr, tn, series("m", kv...))
	}
	tr.Refresh()
	lv := tr.LabelValues(tn, "m")
	for _, c := range counts {
		got := lv["l"+strconv.Itoa(c)]
		if !within(got, int64(c), 0.01) {
			t.Errorf("label with %d values: estimate %d, want within 1%%", c, got)
		}
	}
	// Across metrics, at the tenant level: the same label on a second metric adds
	// values 10000..10099 to l10's 0..9.
	for i := range 100 {
		observe(tr, tn, series("other", "l10", strconv.Itoa(10000+i)))
	}
	tr.Refresh()
	var l10 LabelSummary
	for _, l := range tr.TopLabels(tn, 100) {
		if l.Name == "l10" {
			l10 = l
		}
	}
	if l10.Values != 110 || l10.Series != n+100 && !within(l10.Series, n+100, 0.02) {
		t.Errorf("tenant label l10 = %+v, want 110 values, %d series", l10, n+100)
	}
}

func TestEmptyValueIsAbsent(t *testing.T) {
	t.Parallel()
	tr, _ := newTracker(t, Config{})
	tn := tenant.ID{}
	observe(tr, tn, series("m", "a", "", "b", "x"))
	tr.Refresh()
	lv := tr.LabelValues(tn, "m")
	if _, ok := lv["a"]; ok || lv["b"] != 1 || len(lv) != 1 {
		t.Errorf("LabelValues = %v, want only b=1", lv)
	}
}

func TestWindow(t *testing.T) {
	t.Parallel()
	tr, clk := newTracker(t, Config{}) // 1h window of 6 buckets, 24h churn window
	tn := tenant.ID{AccountID: 3, ProjectID: 4}
	scrape := func(from, to int) {
		for i := from; i < to; i++ {
			observe(tr, tn, series("m", "id", strconv.Itoa(i)))
		}
	}
	active := func() TenantSummary {
		tr.Refresh()
		s, _ := tr.Tenant(tn)
		return s
	}
	// Series 0..99 are scraped for 30 minutes, then replaced by 100..199.
	for range 3 {
		scrape(0, 100)
		clk.Add(10 * time.Minute)
		tr.Refresh()
	}
	if got := active().ActiveSeries; got != 100 {
		t.Fatalf("after 30m: active = %d, want 100", got)
	}
	for step := 0; step < 6; step++ {
		scrape(100, 200)
		clk.Add(10 * time.Minute)
		tr.Rotate(clk.Now()) // what Run does between scrapes
	}
	s := active()
	if s.ActiveSeries != 100 {
		t.Errorf("an hour after 0..99 stopped: active = %d, want 100", s.ActiveSeries)
	}
	if s.DailySeries != 200 || s.Churn != 2 {
		t.Errorf("daily = %d churn = %v, want 200 and 2", s.DailySeries, s.Churn)
	}
	if lv := tr.LabelValues(tn, "m"); lv["id"] != 100 {
		t.Errorf("label id values = %d, want 100 after the label window", lv["id"])
	}
	// Nothing for a day: the tenant and its metrics are dropped.
	clk.Add(25 * time.Hour)
	tr.Refresh()
	if _, ok := tr.Tenant(tn); ok {
		t.Error("tenant still tracked a day after its last series")
	}
	if n := tr.MetricNames(tn); n != nil {
		t.Errorf("MetricNames = %v, want none", n)
	}
}

func TestMetricEviction(t *testing.T) {
	t.Parallel()
	tr, clk := newTracker(t, Config{MaxMetricsPerTenant: 2})
	tn := tenant.ID{AccountID: 5}
	observe(tr, tn, series("a"))
	observe(tr, tn, series("b"))
	clk.Add(61 * time.Minute)
	tr.Refresh() // a and b leave the window and free their slots
	observe(tr, tn, series("c"))
	observe(tr, tn, series("d"))
	tr.Refresh()
	if got := tr.MetricNames(tn); len(got) != 2 || got[0] != "c" || got[1] != "d" {
		t.Errorf("MetricNames = %v, want [c d]", got)
	}
	if _, ok := tr.Metric(tn, OverflowName); ok {
		t.Error("overflow metric exists although stale metrics were evicted")
	}
}

func TestCapsOverflow(t *testing.T) {
	t.Parallel()
	tr, _ := newTracker(t, Config{MaxTenants: 2, MaxMetricsPerTenant: 3, MaxLabelsPerMetric: 2, MaxLabelsPerTenant: 4})
	for a := range uint32(4) {
		tn := tenant.ID{AccountID: a}
		for m := range 5 {
			for s := range 10 {
				observe(tr, tn, series("m"+strconv.Itoa(m), "a", strconv.Itoa(s), "b", "x", "c", strconv.Itoa(s%2), "d", strconv.Itoa(s%5)))
			}
		}
	}
	tr.Refresh()
	ts := tr.Tenants()
	if len(ts) != 3 {
		t.Fatalf("Tenants = %+v, want 2 and the overflow", ts)
	}
	var over TenantSummary
	for _, s := range ts {
		if s.Overflow {
			over = s
		}
	}
	// Tenants 2 and 3 share the overflow entry; their series are the same label sets,
	// so they count once.
	if over.Tenant != OverflowName || over.ActiveSeries != 50 {
		t.Errorf("overflow tenant = %+v, want 50 series", over)
	}
	tn := tenant.ID{AccountID: 0}
	top := tr.TopMetrics(tn, 10, 10)
	if len(top) != 4 {
		t.Fatalf("TopMetrics = %+v, want 3 metrics and the overflow", top)
	}
	om, ok := tr.Metric(tn, OverflowName)
	if !ok || !om.Overflow || om.Series != 20 {
		t.Errorf("overflow metric = %+v, want 20 series of m3 and m4", om)
	}
	m0, _ := tr.Metric(tn, "m0")
	want := []LabelCount{
		{Name: "a", Values: 10, Share: 1},
		{Name: OverflowName, Overflow: true, Values: 7, Share: 0.7}, // c: 2 values, d: 5
		{Name: "b", Values: 1, Share: 0.1},
	}
	if len(m0.Labels) != len(want) {
		t.Fatalf("m0 labels = %+v, want %+v", m0.Labels, want)
	}
	for i := range want {
		if m0.Labels[i] != want[i] {
			t.Errorf("m0 label %d = %+v, want %+v", i, m0.Labels[i], want[i])
		}
	}
	labels := tr.TopLabels(tn, 10)
	if len(labels) != 5 || labels[len(labels)-1].Name != "b" {
		t.Errorf("TopLabels = %+v, want 4 names (__name__, a, b, c) and the overflow", labels)
	}
	for l := range numLevels {
		if tr.overflowTotal[l].Load() == 0 {
			t.Errorf("overflow counter %s = 0", l)
		}
	}
}

func TestRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := dir + "/cardinality.snapshot"
	tr, clk := newTracker(t, Config{MaxTenants: 1})
	for i := range 5000 {
		observe(tr, tenant.ID{AccountID: 1}, series("m", "id", strconv.Itoa(i), "v", strconv.Itoa(i%7)))
		observe(tr, tenant.ID{AccountID: 2}, series("x", "id", strconv.Itoa(i))) // overflow
		if i == 2000 {
			clk.Add(10 * time.Minute)
			tr.Refresh()
		}
	}
	tr.Refresh()
	if err := tr.SaveFile(path, AllBuckets); err != nil {
		t.Fatal(err)
	}

	back, err := New(Config{MaxTenants: 1, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := back.LoadFile(path); err != nil {
		t.Fatal(err)
	}
	back.Refresh()
	for _, q := range []struct {
		name string
		got  any
		want any
	}{
		{"tenants", back.Tenants(), tr.Tenants()},
		{"metrics", back.TopMetrics(tenant.ID{AccountID: 1}, 10, 10), tr.TopMetrics(tenant.ID{AccountID: 1}, 10, 10)},
		{"labels", back.TopLabels(tenant.ID{AccountID: 1}, 10), tr.TopLabels(tenant.ID{AccountID: 1}, 10)},
	} {
		if !reflect.DeepEqual(q.got, q.want) {
			t.Errorf("%s after restart = %+v, want %+v", q.name, q.got, q.want)
		}
	}
	if s, _ := back.Tenant(tenant.ID{AccountID: 1}); s.ActiveSeries < 4900 {
		t.Errorf("restored series = %d, want about 5000", s.ActiveSeries)
	}

	// Loading twice changes nothing: merges are idempotent.
	if err := back.LoadFile(path); err != nil {
		t.Fatal(err)
	}
	back.Refresh()
	if !reflect.DeepEqual(back.Tenants(), tr.Tenants()) {
		t.Errorf("second load changed the estimates: %+v", back.Tenants())
	}

	// A snapshot older than the window brings nothing back.
	clk.Add(25 * time.Hour)
	late, _ := New(Config{Now: clk.Now})
	if err := late.LoadFile(path); err != nil {
		t.Fatal(err)
	}
	late.Refresh()
	if ts := late.Tenants(); len(ts) != 0 {
		t.Errorf("stale snapshot restored %+v", ts)
	}
	if err := late.LoadFile(dir + "/missing"); err != nil {
		t.Errorf("missing file: %v", err)
	}
}

func TestSnapshotErrors(t *testing.T) {
	t.Parallel()
	tr, _ := newTracker(t, Config{})
	observe(tr, tenant.ID{}, series("m", "a", "b"))
	var buf bytes.Buffer
	if err := tr.WriteSnapshot(&buf, AllBuckets); err != nil {
		t.Fatal(err)
	}
	other, _ := newTracker(t, Config{Buckets: 12})
	if err := other.ReadSnapshot(bytes.NewReader(buf.Bytes())); err == nil {
		t.Error("snapshot with other bucket widths was accepted")
	}
	if err := tr.ReadSnapshot(strings.NewReader("garbage")); err == nil {
		t.Error("garbage snapshot was accepted")
	}
	for _, b := range tr.ExportBuckets(tenant.ID{}) {
		if b.Level != LevelSeries {
			continue
		}
		b.Series = []byte{2, 14, 0, 9}
		if err := tr.MergeBuckets([]Bucket{b}); err == nil {
			t.Error("corrupt sketch was accepted")
		}
		b.Series, b.Level = nil, "weekly"
		if err := tr.MergeBuckets([]Bucket{b}); err == nil {
			t.Error("unknown level was accepted")
		}
	}
}

func TestMerge(t *testing.T) {
	t.Parallel()
	a, clk := newTracker(t, Config{})
	b, _ := newTracker(t, Config{Now: clk.Now})
	tn := tenant.ID{AccountID: 9}
	for i := range 3000 {
		ls := series("m", "id", strconv.Itoa(i), "half", strconv.Itoa(i/1500))
		if i < 2000 {
			observe(a, tn, ls)
		}
		if i >= 1000 {
			observe(b, tn, ls)
		}
	}
	if err := a.Merge(b); err != nil {
		t.Fatal(err)
	}
	a.Refresh()
	got, _ := a.MetricSeries(tn, "m")
	if !within(got, 3000, 0.02) {
		t.Errorf("merged series = %d, want 3000", got)
	}
	if lv := a.LabelValues(tn, "m"); lv["half"] != 2 {
		t.Errorf("merged label values = %v", lv)
	}
}

// A bucket merged into an empty one is taken as it is (ring.merge): the
// sketch must then take further merges and observations like any other.
func TestMergeIntoEmptyThenObserve(t *testing.T) {
	t.Parallel()
	a, clk := newTracker(t, Config{})
	c, _ := newTracker(t, Config{Now: clk.Now})
	tn := tenant.ID{AccountID: 9}
	for i := range 2000 {
		observe(a, tn, series("m", "id", strconv.Itoa(i)))
	}
	for range 2 { // the second merge must count nothing twice
		if err := c.Merge(a); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1500; i < 3000; i++ {
		observe(c, tn, series("m", "id", strconv.Itoa(i)))
	}
	c.Refresh()
	if got, _ := c.MetricSeries(tn, "m"); !within(got, 3000, 0.02) {
		t.Errorf("merged then observed: %d series, want 3000", got)
	}
	a.Refresh()
	if got, _ := a.MetricSeries(tn, "m"); !within(got, 2000, 0.02) {
		t.Errorf("the exporting tracker now counts %d series, want its 2000", got)
	}
}

// A newer copy of one source's bucket replaces the copy merged before; a
// bucket that took anything else, from another source or observed here,
// merges it instead.
func TestMergeBucketsFromSources(t *testing.T) {
	t.Parallel()
	r1, clk := newTracker(t, Config{})
	r2, _ := newTracker(t, Config{Now: clk.Now})
	tn := tenant.ID{AccountID: 9}
	obs := func(tr *Tracker, metric string, from, to int) {
		for i := from; i < to; i++ {
			observe(tr, tn, series(metric, "id", strconv.Itoa(i)))
		}
	}
	count := func(tr *Tracker, metric string) int64 {
		tr.Refresh()
		n, _ := tr.MetricSeries(tn, metric)
		return n
	}
	merge := func(into *Tracker, source string, from *Tracker) {
		t.Helper()
		if err := into.MergeBucketsFrom(source, from.ExportBuckets(tn)); err != nil {
			t.Fatal(err)
		}
	}

	// One source: its grown bucket replaces the copy.
	only, _ := newTracker(t, Config{Now: clk.Now})
	obs(r1, "a", 0, 1000)
	merge(only, "r1", r1)
	obs(r1, "a", 1000, 1500)
	merge(only, "r1", r1)
	if got := count(only, "a"); !within(got, 1500, 0.02) {
		t.Errorf("one source: %d series, want 1500", got)
	}

	// Two sources in one bucket: a newer copy of one keeps the other's.
	mixed, _ := newTracker(t, Config{Now: clk.Now})
	obs(r2, "a", 3000, 3400)
	merge(mixed, "r1", r1)
	merge(mixed, "r2", r2)
	obs(r1, "a", 1500, 2000)
	merge(mixed, "r1", r1)
	if got := count(mixed, "a"); !within(got, 2400, 0.02) {
		t.Errorf("two sources: %d series, want 2000 + 400", got)
	}

	// Observed here too: a source's copy merges into what was observed.
	own, _ := newTracker(t, Config{Now: clk.Now})
	merge(own, "r1", r1)
	obs(own, "a", 5000, 5300)
	obs(r1, "a", 2000, 2100)
	merge(own, "r1", r1)
	if got := count(own, "a"); !within(got, 2400, 0.02) {
		t.Errorf("observed and merged: %d series, want 2100 + 300", got)
	}
}

func TestConcurrentObserve(t *testing.T) {
	t.Parallel()
	tr, clk := newTracker(t, Config{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				observe(tr, tenant.ID{AccountID: uint32(g % 2)}, series("m"+strconv.Itoa(i%3), "id", strconv.Itoa(i)))
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 5 {
			clk.Add(time.Minute)
			tr.Refresh()
			_ = tr.Tenants()
		}
	}()
	wg.Wait()
	tr.Refresh()
	for a := range uint32(2) {
		if s, _ := tr.Tenant(tenant.ID{AccountID: a}); s.ActiveSeries != 2000 {
			t.Errorf("tenant %d: %d series, want 2000", a, s.ActiveSeries)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{}, true},
		{"label buckets not dividing", Config{Buckets: 6, LabelBuckets: 4}, false},
		{"uneven window", Config{Window: time.Hour, Buckets: 7}, false},
		{"churn bucket not whole series buckets", Config{ChurnWindow: 25 * time.Minute, ChurnBuckets: 1}, false},
		{"precision", Config{LabelPrecision: 19}, false},
		{"negative cap", Config{MaxTenants: -1}, false},
		{"one bucket", Config{Buckets: 1, ChurnBuckets: 1, ChurnWindow: time.Hour}, true},
		{"metric churn bucket not whole series buckets", Config{MetricChurnBuckets: 5}, false},
		{"metric churn buckets negative", Config{MetricChurnBuckets: -1}, false},
		{"metric churn buckets 8", Config{MetricChurnBuckets: 8}, true},
	}
	for _, tt := range tests {
		if _, err := New(tt.cfg); (err == nil) != tt.ok {
			t.Errorf("%s: New error = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}

func TestObserveDoesNotRetain(t *testing.T) {
	t.Parallel()
	tr, _ := newTracker(t, Config{})
	// The strings alias buffers the caller reuses, as prompb's do.
	buf := []byte("metric_name")
	lb := []byte("label_name")
	val := []byte("value")
	ls := []prompb.Label{
		{Name: metricNameLabel, Value: unsafe.String(&buf[0], len(buf))},
		{Name: unsafe.String(&lb[0], len(lb)), Value: unsafe.String(&val[0], len(val))},
	}
	tr.Observe(tenant.ID{}, ls[0].Value, ls, 1)
	copy(buf, "xxxxxxxxxxx")
	copy(lb, "yyyyyyyyyy")
	tr.Refresh()
	if got := tr.MetricNames(tenant.ID{}); len(got) != 1 || got[0] != "metric_name" {
		t.Errorf("MetricNames = %v", got)
	}
	if got := tr.LabelValues(tenant.ID{}, "metric_name"); got["label_name"] != 1 {
		t.Errorf("LabelValues = %v", got)
	}
}

// Not parallel: AllocsPerRun refuses to run beside parallel tests.
func TestObserveSteadyStateAllocs(t *testing.T) {
	w := newWorkload(3, 100)
	tr, _ := newTracker(t, Config{})
	tn := tenant.ID{AccountID: 1}
	for i := range w.labels {
		w.observe(tr, tn, i)
	}
	i := 0
	if n := testing.AllocsPerRun(1000, func() { w.observe(tr, tn, i); i++ }); n != 0 {
		t.Errorf("Observe of a known series allocates %v times", n)
	}
}

func TestReadNegativeLimits(t *testing.T) {
	t.Parallel()
	tr, _ := newTracker(t, Config{})
	observe(tr, tenant.ID{}, series("m", "a", "b"))
	tr.Refresh()
	if got := tr.TopMetrics(tenant.ID{}, -1, -1); len(got) != 0 {
		t.Errorf("TopMetrics(-1) = %v", got)
	}
	if got := tr.TopLabels(tenant.ID{}, -1); len(got) != 0 {
		t.Errorf("TopLabels(-1) = %v", got)
	}
	if got := tr.TSDBStatus(tenant.ID{}, -1); len(got.Data.SeriesCountByMetricName) != 0 || got.Data.TotalSeries != 1 {
		t.Errorf("TSDBStatus(-1) = %+v", got)
	}
}

func TestMetricChurn(t *testing.T) {
	t.Parallel()
	tr, clk := newTracker(t, Config{}) // 1h window, 4 metric churn buckets of 6h
	tn := tenant.ID{AccountID: 7}
	scrape := func(metric string, from, to int) {
		for i := from; i < to; i++ {
			observe(tr, tn, series(metric, "id", strconv.Itoa(i)))
		}
	}
	// "stable" keeps series 0..499; "replaced" has 0..499 for an hour, then 500..999.
	for step := range 12 {
		scrape("stable", 0, 500)
		if step < 6 {
			scrape("replaced", 0, 500)
		} else {
			scrape("replaced", 500, 1000)
		}
		clk.Add(10 * time.Minute)
		tr.Refresh()
	}
	for _, tt := range []struct {
		metric string
		want   float64
	}{{"stable", 1}, {"replaced", 2}} {
		m, ok := tr.Metric(tn, tt.metric)
		if !ok {
			t.Fatalf("%s not tracked", tt.metric)
		}
		if m.Series < 490 || m.Series > 510 || math.Abs(m.Churn-tt.want) > 0.03 {
			t.Errorf("%s: series %d churn %v, want 500 and %v", tt.metric, m.Series, m.Churn, tt.want)
		}
		if top := tr.TopMetrics(tn, 10, 0); len(top) != 2 || top[0].Churn == 0 || top[1].Churn == 0 {
			t.Errorf("TopMetrics without churn: %+v", top)
		}
	}

	// A snapshot keeps the metric churn.
	var buf bytes.Buffer
	if err := tr.WriteSnapshot(&buf, AllBuckets); err != nil {
		t.Fatal(err)
	}
	back, err := New(Config{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := back.ReadSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	back.Refresh()
	for _, name := range []string{"stable", "replaced"} {
		got, _ := back.Metric(tn, name)
		want, _ := tr.Metric(tn, name)
		if got.Churn != want.Churn || got.Series != want.Series {
			t.Errorf("%s after snapshot: series %d churn %v, want %d and %v", name, got.Series, got.Churn, want.Series, want.Churn)
		}
	}

	// A metric churn bucket replayed into a tracker with other widths is refused.
	other, _ := New(Config{Now: clk.Now, MetricChurnBuckets: 8})
	var mc []Bucket
	for _, b := range tr.ExportBuckets(tn) {
		if b.Level == LevelMetricChurn {
			mc = append(mc, b)
		}
	}
	if len(mc) == 0 {
		t.Fatal("no metric churn bucket exported")
	}
	if err := other.MergeBuckets(mc); err == nil {
		t.Error("metric churn bucket of another width was accepted")
	}
}

// A snapshot of the local buckets leaves out what was merged from other
// replicas; one of every bucket has it. Snapshots written in gob, before the
// binary one, are still read; a cut one is refused.
func TestSnapshotScopesAndVersions(t *testing.T) {
	t.Parallel()
	tn := tenant.ID{AccountID: 1}
	other, clk := newTracker(t, Config{})
	for i := range 300 {
		observe(other, tn, series("theirs", "id", strconv.Itoa(i)))
	}
	tr, err := New(Config{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		observe(tr, tn, series("mine", "id", strconv.Itoa(i)))
	}
	if err := tr.MergeBucketsFrom("other", other.ExportBuckets(tn)); err != nil {
		t.Fatal(err)
	}
	tr.Refresh()
	load := func(data []byte) *Tracker {
		t.Helper()
		back, err := New(Config{Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		if err := back.ReadSnapshot(bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		back.Refresh()
		return back
	}
	seriesOf := func(tr *Tracker, name string) int64 {
		m, _ := tr.Metric(tn, name)
		return m.Series
	}
	var all, local bytes.Buffer
	if err := tr.WriteSnapshot(&all, AllBuckets); err != nil {
		t.Fatal(err)
	}
	if err := tr.WriteSnapshot(&local, LocalBuckets); err != nil {
		t.Fatal(err)
	}
	if back := load(all.Bytes()); seriesOf(back, "mine") != seriesOf(tr, "mine") || seriesOf(back, "theirs") != seriesOf(tr, "theirs") || seriesOf(back, "theirs") == 0 {
		t.Errorf("all buckets: mine %d theirs %d; want %d and %d", seriesOf(back, "mine"), seriesOf(back, "theirs"), seriesOf(tr, "mine"), seriesOf(tr, "theirs"))
	}
	if back := load(local.Bytes()); seriesOf(back, "mine") != seriesOf(tr, "mine") || seriesOf(back, "theirs") != 0 {
		t.Errorf("local buckets: mine %d theirs %d; want %d and 0", seriesOf(back, "mine"), seriesOf(back, "theirs"), seriesOf(tr, "mine"))
	}

	var v1 bytes.Buffer
	s := snapshot{Version: snapshotV1, SavedAt: clk.Now(), Buckets: tr.ExportBuckets(tn)}
	if err := gob.NewEncoder(&v1).Encode(&s); err != nil {
		t.Fatal(err)
	}
	if back := load(v1.Bytes()); seriesOf(back, "theirs") != seriesOf(tr, "theirs") || seriesOf(back, "mine") != seriesOf(tr, "mine") {
		t.Errorf("gob snapshot: mine %d theirs %d", seriesOf(back, "mine"), seriesOf(back, "theirs"))
	}

	cut := all.Bytes()[:all.Len()-3]
	if err := tr.ReadSnapshot(bytes.NewReader(cut)); err == nil {
		t.Error("a cut snapshot was read")
	}
}
