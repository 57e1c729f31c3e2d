package limits

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cardguard/cardguard/internal/tenant"
)

// fakeClock is an injected clock tests move by hand.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func seriesLimits(maxSeries, perMetric int) *Limits {
	l := Default()
	l.MaxSeries, l.MaxSeriesPerMetric = maxSeries, perMetric
	return &l
}

var (
	tenantA = tenant.MustParse("1")
	tenantB = tenant.MustParse("2:7")
)

func TestAdmitSeriesExact(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	e := NewEnforcer(EnforcerOptions{Now: clock.Now})
	l := seriesLimits(1000, 0)

	var admitted []uint64
	for i := range 1500 {
		h := uint64(i)*0x9e3779b97f4a7c15 + 1
		switch r := e.AdmitSeries(tenantA, l, fmt.Sprintf("m%d", i%7), h); r {
		case "":
			admitted = append(admitted, h)
		case ReasonMaxSeries:
		default:
			t.Fatalf("series %d: reason %q", i, r)
		}
	}
	if len(admitted) != 1000 || e.SeriesCount(tenantA) != 1000 {
		t.Fatalf("admitted %d, count %d; want exactly 1000", len(admitted), e.SeriesCount(tenantA))
	}
	// A later push: the admitted ones keep flowing, the others are still refused.
	clock.Advance(time.Minute)
	for _, h := range admitted {
		if r := e.AdmitSeries(tenantA, l, "m0", h); r != "" {
			t.Fatalf("admitted series %x refused later: %q", h, r)
		}
	}
	for i := 1000; i < 1500; i++ {
		h := uint64(i)*0x9e3779b97f4a7c15 + 1
		if r := e.AdmitSeries(tenantA, l, "m0", h); r != ReasonMaxSeries {
			t.Fatalf("series %d: got %q, want max_series", i, r)
		}
	}
	// Another tenant is untouched, even with the same hashes.
	for i := range 10 {
		if r := e.AdmitSeries(tenantB, l, "m0", uint64(i)*0x9e3779b97f4a7c15+1); r != "" {
			t.Fatalf("tenant B refused: %q", r)
		}
	}
	if e.SeriesCount(tenantB) != 10 || e.SeriesCount(tenantA) != 1000 {
		t.Fatalf("counts A %d B %d", e.SeriesCount(tenantA), e.SeriesCount(tenantB))
	}
}

func TestAdmitSeriesConcurrentExact(t *testing.T) {
	t.Parallel()
	e := NewEnforcer(EnforcerOptions{Now: newFakeClock().Now})
	l := seriesLimits(1000, 300)
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				h := uint64(g*1000+i)*0x9e3779b97f4a7c15 + 1
				if e.AdmitSeries(tenantA, l, fmt.Sprintf("m%d", i%5), h) == "" {
					admitted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if admitted.Load() != 1000 || e.SeriesCount(tenantA) != 1000 {
		t.Fatalf("admitted %d, count %d; want 1000", admitted.Load(), e.SeriesCount(tenantA))
	}
	for i := range 5 {
		if n := e.MetricSeriesCount(tenantA, fmt.Sprintf("m%d", i)); n > 300 {
			t.Fatalf("metric m%d has %d series over 300", i, n)
		}
	}
}

func TestAdmitSeriesPerMetric(t *testing.T) {
	t.Parallel()
	e := NewEnforcer(EnforcerOptions{Now: newFakeClock().Now})
	l := seriesLimits(0, 3)
	for i := range 5 {
		want := Reason("")
		if i >= 3 {
			want = ReasonMaxSeriesPerMetric
		}
		if r := e.AdmitSeries(tenantA, l, "http_requests_total", uint64(100+i)); r != want {
			t.Fatalf("series %d of the metric: got %q, want %q", i, r, want)
		}
	}
	if r := e.AdmitSeries(tenantA, l, "up", 1); r != "" {
		t.Fatalf("another metric refused: %q", r)
	}
	if n := e.MetricSeriesCount(tenantA, "http_requests_total"); n != 3 {
		t.Fatalf("metric count %d, want 3", n)
	}
	if n := e.SeriesCount(tenantA); n != 4 {
		t.Fatalf("tenant count %d, want 4 (a refused series is not counted)", n)
	}
	// Tenant limit reached first wins the reason.
	l2 := seriesLimits(4, 3)
	if r := e.AdmitSeries(tenantA, l2, "http_requests_total", 999); r != ReasonMaxSeries {
		t.Fatalf("got %q, want max_series", r)
	}
}

func TestAdmitSeriesWindowRotation(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	e := NewEnforcer(EnforcerOptions{Now: clock.Now, Window: time.Hour})
	l := seriesLimits(2, 0)
	admit := func(h uint64) Reason { return e.AdmitSeries(tenantA, l, "m", h) }

	clock.ns.Store(clock.ns.Load() / int64(time.Hour) * int64(time.Hour)) // start of a window
	if admit(1) != "" || admit(2) != "" || admit(3) != ReasonMaxSeries {
		t.Fatal("first window")
	}
	clock.Advance(time.Hour + time.Minute) // next window: 1 and 2 are in prev
	if admit(1) != "" {                    // moves 1 to cur
		t.Fatal("series 1 should still be active")
	}
	if admit(3) != ReasonMaxSeries || e.SeriesCount(tenantA) != 2 {
		t.Fatalf("second window: count %d", e.SeriesCount(tenantA))
	}
	clock.Advance(time.Hour) // series 2 not seen for a whole window: expired
	if n := e.SeriesCount(tenantA); n != 1 {
		t.Fatalf("after expiry count %d, want 1", n)
	}
	if admit(3) != "" || admit(4) != ReasonMaxSeries {
		t.Fatal("room from the expired series should go to exactly one new series")
	}
	clock.Advance(5 * time.Hour) // everything expired
	if n := e.SeriesCount(tenantA); n != 0 {
		t.Fatalf("after long idle count %d", n)
	}
	if n := e.MetricSeriesCount(tenantA, "m"); n != 0 {
		t.Fatalf("metric count after idle %d", n)
	}
	if admit(5) != "" || admit(6) != "" || admit(7) != ReasonMaxSeries {
		t.Fatal("fresh window")
	}
}

func TestAdmitSeriesDryRun(t *testing.T) {
	t.Parallel()
	e := NewEnforcer(EnforcerOptions{Now: newFakeClock().Now})
	l := seriesLimits(1, 0)
	l.Mode = ModeDryRun
	if e.AdmitSeries(tenantA, l, "m", 1) != "" {
		t.Fatal("first series")
	}
	// Over the limit: reported every time, never remembered.
	for range 3 {
		if r := e.AdmitSeries(tenantA, l, "m", 2); r != ReasonMaxSeries {
			t.Fatalf("got %q", r)
		}
		e.RecordDiscard(tenantA, ReasonMaxSeries, 1, l.DryRun())
	}
	if n := e.SeriesCount(tenantA); n != 1 {
		t.Fatalf("count %d, want 1", n)
	}
	enforced, dry := e.Discards(tenantA)
	if len(enforced) != 0 || dry[ReasonMaxSeries] != 3 {
		t.Fatalf("discards %v / %v", enforced, dry)
	}
}

func TestAdmitSeriesNoLimitTracksNothing(t *testing.T) {
	t.Parallel()
	e := NewEnforcer(EnforcerOptions{})
	l := Default()
	for i := range 100 {
		if e.AdmitSeries(tenantA, &l, "m", uint64(i)) != "" {
			t.Fatal("refused without limit")
		}
	}
	if e.SeriesCount(tenantA) != 0 || e.AdmitSeries(tenantA, nil, "m", 1) != "" {
		t.Fatal("tracked without a limit")
	}
}

func TestCaps(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	e := NewEnforcer(EnforcerOptions{Registerer: reg, MaxTenants: 2, MaxMetricsPerTenant: 2, MaxTenantLabels: 1})
	l := seriesLimits(0, 1)
	for i := range 4 {
		if r := e.AdmitSeries(tenantA, l, fmt.Sprintf("m%d", i), uint64(i)); r != "" {
			t.Fatalf("metric %d: %q", i, r)
		}
	}
	// m2 and m3 are beyond the metric cap: not limited per metric, counted as overflow.
	if r := e.AdmitSeries(tenantA, l, "m3", 99); r != "" {
		t.Fatalf("overflow metric limited: %q", r)
	}
	if r := e.AdmitSeries(tenantA, l, "m0", 98); r != ReasonMaxSeriesPerMetric {
		t.Fatalf("tracked metric not limited: %q", r)
	}
	if got := gathered(t, reg, "cardguard_limits_metric_overflow_total", nil); got != 3 {
		t.Fatalf("metric overflow %v, want 3", got)
	}
	for i := range 4 {
		e.RecordDiscard(tenant.ID{AccountID: uint32(10 + i)}, ReasonInvalidSeries, 1, false)
	}
	if got := gathered(t, reg, "cardguard_limits_tenant_overflow_total", nil); got != 3 {
		t.Fatalf("tenant overflow %v, want 3", got)
	}
	// Tenant labels: 1 is "1:0", every later one is "other".
	if got := gathered(t, reg, "cardguard_discarded_samples_total", map[string]string{"reason": "invalid_series", "tenant": "other"}); got != 4 {
		t.Fatalf("discards of other tenants %v, want 4", got)
	}
	if n := seriesOf(t, reg, "cardguard_discarded_samples_total"); n != 1 {
		t.Fatalf("%d discard series, want 1", n)
	}
}

func TestRecordDiscard(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	var logs bytes.Buffer
	clock := newFakeClock()
	e := NewEnforcer(EnforcerOptions{
		Registerer: reg, Now: clock.Now,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	e.RecordDiscard(tenantA, ReasonMaxSeries, 5, false)
	e.RecordDiscard(tenantA, ReasonMaxSeries, 2, false) // within 10 s: no line
	e.RecordDiscard(tenantA, ReasonLabelGuard, 3, true)
	e.RecordDiscard(tenantA, ReasonMaxSeries, 0, false)
	clock.Advance(11 * time.Second)
	e.RecordDiscard(tenantA, ReasonMaxSeries, 1, false) // line with 3 samples since the last
	e.RecordDiscard(tenantB, Reason("custom"), 4, false)

	for _, c := range []struct {
		name, tenant, reason string
		want                 float64
	}{
		{"cardguard_discarded_samples_total", "2:7", "custom", 4},
		{"cardguard_discarded_samples_total", "1:0", "max_series", 8},
		{"cardguard_dry_run_discarded_samples_total", "1:0", "label_guard", 3},
	} {
		if got := gathered(t, reg, c.name, map[string]string{"tenant": c.tenant, "reason": c.reason}); got != c.want {
			t.Errorf("%s{tenant=%q,reason=%q} = %v, want %v", c.name, c.tenant, c.reason, got, c.want)
		}
	}
	if n := seriesOf(t, reg, "cardguard_discarded_samples_total") + seriesOf(t, reg, "cardguard_dry_run_discarded_samples_total"); n != 3 {
		t.Fatalf("%d discard series, want 3", n)
	}
	enforced, dry := e.Discards(tenantA)
	if enforced[ReasonMaxSeries] != 8 || dry[ReasonLabelGuard] != 3 || len(enforced) != 1 || len(dry) != 1 {
		t.Fatalf("discards %v %v", enforced, dry)
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 3 log lines (2 for max_series, 1 dry run), got:\n%s", logs.String())
	}
	if !strings.Contains(lines[2], "samples=3") || !strings.Contains(lines[2], "reason=max_series") {
		t.Fatalf("sampled line: %s", lines[2])
	}
	if !strings.Contains(lines[1], "dry run") {
		t.Fatalf("dry run line: %s", lines[1])
	}
}

func TestTrackedSeriesMetric(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	e := NewEnforcer(EnforcerOptions{Registerer: reg})
	l := seriesLimits(10, 0)
	for i := range 3 {
		e.AdmitSeries(tenantA, l, "m", uint64(i))
	}
	if got := gathered(t, reg, "cardguard_limits_tracked_series", map[string]string{"tenant": "1:0"}); got != 3 {
		t.Fatalf("tracked series %v, want 3", got)
	}
	if got := gathered(t, reg, "cardguard_limits_tracked_tenants", nil); got != 1 {
		t.Fatalf("tracked tenants %v, want 1", got)
	}
}

func TestAllowSamples(t *testing.T) {
	t.Parallel()
	e := NewEnforcer(EnforcerOptions{})
	l := Default()
	l.IngestionRate, l.IngestionBurst = 100, 200
	now := time.Unix(1000, 0)
	steps := []struct {
		name  string
		after time.Duration
		n     int
		ok    bool
		retry time.Duration
	}{
		{"burst available", 0, 150, true, 0},
		{"50 left", 0, 50, true, 0},
		{"empty", 0, 10, false, time.Second},
		{"0.5 s refills 50", 500 * time.Millisecond, 50, true, 0},
		{"needs 2 s for 200", 0, 200, false, 2 * time.Second},
		{"needs 1.5 s → 2 s", 500 * time.Millisecond, 200, false, 2 * time.Second},
		{"full again", 2 * time.Second, 200, true, 0},
		{"larger than burst refused unless full", time.Second, 1000, false, time.Second},
		{"larger than burst allowed when full", time.Second, 1000, true, 0},
		{"debt of 800: 100 fit after 9 s", 0, 100, false, 9 * time.Second},
		{"zero samples", 0, 0, true, 0},
	}
	for _, s := range steps {
		now = now.Add(s.after)
		ok, retry := e.AllowSamples(tenantA, &l, s.n, now)
		if ok != s.ok || retry != s.retry {
			t.Fatalf("%s: got %v %v, want %v %v", s.name, ok, retry, s.ok, s.retry)
		}
	}
	// Retry-After is capped.
	slow := Default()
	slow.IngestionRate, slow.IngestionBurst = 0.001, 10
	e.AllowSamples(tenantB, &slow, 10, now)
	if ok, retry := e.AllowSamples(tenantB, &slow, 10, now); ok || retry != MaxRetryAfter {
		t.Fatalf("cap: %v %v", ok, retry)
	}
	// Burst 0 means one second of rate.
	oneSec := Default()
	oneSec.IngestionRate = 10
	tc := tenant.MustParse("3")
	if ok, _ := e.AllowSamples(tc, &oneSec, 10, now); !ok {
		t.Fatal("burst of one second refused")
	}
	if ok, _ := e.AllowSamples(tc, &oneSec, 1, now); ok {
		t.Fatal("over one second of rate allowed")
	}
}

func TestIngestionRate(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	clock.ns.Store(clock.ns.Load() / rateMeterSlot * rateMeterSlot)
	e := NewEnforcer(EnforcerOptions{Now: clock.Now})
	unlimited := Default()
	for range 10 {
		e.AllowSamples(tenantA, &unlimited, 100, clock.Now())
		clock.Advance(time.Second)
	}
	// 1000 samples in the last 10 s.
	if got := e.IngestionRate(tenantA); got < 99 || got > 101 {
		t.Fatalf("rate %v, want about 100/s", got)
	}
	clock.Advance(time.Minute)
	if got := e.IngestionRate(tenantA); got != 0 {
		t.Fatalf("idle rate %v", got)
	}
	if e.IngestionRate(tenantB) != 0 {
		t.Fatal("unknown tenant has a rate")
	}
}

func TestCheckLabels(t *testing.T) {
	t.Parallel()
	l := Default()
	l.MaxLabelsPerSeries, l.MaxLabelNameLength, l.MaxLabelValueLength = 3, 5, 8
	lbl := func(kv ...string) []prompb.Label {
		var out []prompb.Label
		for i := 0; i < len(kv); i += 2 {
			out = append(out, prompb.Label{Name: kv[i], Value: kv[i+1]})
		}
		return out
	}
	tests := []struct {
		name   string
		limits func(l Limits) Limits
		labels []prompb.Label
		want   Reason
	}{
		{"fine", nil, lbl("__n", "up", "job", "api"), ""},
		{"at every limit", nil, lbl("a", "x", "bbbbb", "12345678", "c", "z"), ""},
		{"too many", nil, lbl("a", "1", "b", "2", "c", "3", "d", "4"), ReasonMaxLabelsPerSeries},
		{"name too long", nil, lbl("a", "1", "bbbbbb", "2"), ReasonMaxLabelNameLength},
		{"value too long", nil, lbl("a", "123456789"), ReasonMaxLabelValueLength},
		{"count wins", nil, lbl("aaaaaaa", "1", "b", "2", "c", "3", "d", "4"), ReasonMaxLabelsPerSeries},
		{"first bad label wins", nil, lbl("a", "123456789", "bbbbbb", "2"), ReasonMaxLabelValueLength},
		{"bytes not runes", nil, lbl("a", "ééééé"), ReasonMaxLabelValueLength},
		{"unlimited", func(l Limits) Limits {
			l.MaxLabelsPerSeries, l.MaxLabelNameLength, l.MaxLabelValueLength = 0, 0, 0
			return l
		}, lbl("a", "1", "b", "2", "c", "3", "dddddddddd", strings.Repeat("v", 10000)), ""},
		{"only value limit", func(l Limits) Limits {
			l.MaxLabelNameLength = 0
			return l
		}, lbl("aaaaaaaaaa", "123456789"), ReasonMaxLabelValueLength},
		{"empty", nil, nil, ""},
	}
	for _, tt := range tests {
		ll := l
		if tt.limits != nil {
			ll = tt.limits(l)
		}
		if got := CheckLabels(&ll, tt.labels); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

func benchLabels() []prompb.Label {
	return []prompb.Label{
		{Name: "__name__", Value: "http_requests_total"},
		{Name: "code", Value: "200"},
		{Name: "handler", Value: "/api/v1/query_range"},
		{Name: "instance", Value: "10.1.2.3:9090"},
		{Name: "job", Value: "prometheus"},
		{Name: "method", Value: "GET"},
		{Name: "namespace", Value: "monitoring"},
		{Name: "pod", Value: "prometheus-k8s-0"},
		{Name: "region", Value: "eu-west-1"},
		{Name: "service", Value: "prometheus-k8s"},
	}
}

func BenchmarkCheckLabels(b *testing.B) {
	l := Default()
	labels := benchLabels()
	b.ReportAllocs()
	for b.Loop() {
		if CheckLabels(&l, labels) != "" {
			b.Fatal("refused")
		}
	}
}

func BenchmarkAdmitSeriesExisting(b *testing.B) {
	e := NewEnforcer(EnforcerOptions{})
	l := seriesLimits(1_000_000, 100_000)
	const n = 100_000
	for i := range n {
		e.AdmitSeries(tenantA, l, "http_requests_total", uint64(i)*0x9e3779b97f4a7c15)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if e.AdmitSeries(tenantA, l, "http_requests_total", uint64(i%n)*0x9e3779b97f4a7c15) != "" {
			b.Fatal("refused")
		}
		i++
	}
}

func BenchmarkAdmitSeriesExistingParallel(b *testing.B) {
	e := NewEnforcer(EnforcerOptions{})
	l := seriesLimits(1_000_000, 100_000)
	const n = 100_000
	for i := range n {
		e.AdmitSeries(tenantA, l, "http_requests_total", uint64(i)*0x9e3779b97f4a7c15)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			e.AdmitSeries(tenantA, l, "http_requests_total", uint64(i%n)*0x9e3779b97f4a7c15)
			i++
		}
	})
}

// BenchmarkAdmitSeriesNew admits only new series (the map grows, so allocations
// amortised over map growth show up) of 1,000 metric names.
func BenchmarkAdmitSeriesNew(b *testing.B) {
	e := NewEnforcer(EnforcerOptions{})
	l := seriesLimits(0, 1<<30)
	metrics := make([]string, 1000)
	for i := range metrics {
		metrics[i] = fmt.Sprintf("metric_%d", i)
		e.AdmitSeries(tenantA, l, metrics[i], uint64(i)<<40)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if e.AdmitSeries(tenantA, l, metrics[i%len(metrics)], uint64(i)*0x9e3779b97f4a7c15+7) != "" {
			b.Fatal("refused")
		}
		i++
	}
}

// BenchmarkAdmitSeriesRefused is the new-series path at the limit: the common case
// during a cardinality explosion.
func BenchmarkAdmitSeriesRefused(b *testing.B) {
	e := NewEnforcer(EnforcerOptions{})
	l := seriesLimits(1000, 0)
	for i := range 1000 {
		e.AdmitSeries(tenantA, l, "m", uint64(i))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if e.AdmitSeries(tenantA, l, "m", uint64(i)+1<<40) != ReasonMaxSeries {
			b.Fatal("admitted")
		}
		i++
	}
}

func BenchmarkAllowSamples(b *testing.B) {
	e := NewEnforcer(EnforcerOptions{})
	l := Default()
	l.IngestionRate, l.IngestionBurst = 1e12, 1e12
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		e.AllowSamples(tenantA, &l, 1000, now)
	}
}

func BenchmarkRecordDiscard(b *testing.B) {
	e := NewEnforcer(EnforcerOptions{Registerer: prometheus.NewRegistry()})
	b.ReportAllocs()
	for b.Loop() {
		e.RecordDiscard(tenantA, ReasonMaxSeries, 1, false)
	}
}

// gathered returns the value of the series of name with exactly labels, or -1.
func gathered(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	for _, m := range families(t, reg, name) {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		match := true
		for _, lp := range m.GetLabel() {
			if labels[lp.GetName()] != lp.GetValue() {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		}
	}
	return -1
}

func seriesOf(t *testing.T, reg *prometheus.Registry, name string) int {
	t.Helper()
	return len(families(t, reg, name))
}

func families(t *testing.T, reg *prometheus.Registry, name string) []*dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()
		}
	}
	return nil
}

func TestAdmitter(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	e := NewEnforcer(EnforcerOptions{Now: clock.Now})
	l := seriesLimits(2, 0)
	a := e.Admitter(tenantA, l, clock.Now())
	if a.Admit("m", 1) != "" || a.Admit("m", 2) != "" || a.Admit("m", 3) != ReasonMaxSeries {
		t.Fatal("admitter does not enforce max_series")
	}
	// Same state as AdmitSeries.
	if e.AdmitSeries(tenantA, l, "m", 1) != "" || e.AdmitSeries(tenantA, l, "m", 4) != ReasonMaxSeries {
		t.Fatal("admitter and AdmitSeries disagree")
	}
	if (e.Admitter(tenantA, nil, clock.Now())).Admit("m", 9) != "" {
		t.Fatal("no limits refused")
	}
	// A later request past two windows starts afresh: 1 and 2 expired.
	b := e.Admitter(tenantA, l, clock.Now().Add(3*time.Hour))
	if b.Admit("m", 5) != "" || b.Admit("m", 6) != "" || b.Admit("m", 1) != ReasonMaxSeries {
		t.Fatal("expired series still counted")
	}
}

func BenchmarkAdmitterExisting(b *testing.B) {
	e := NewEnforcer(EnforcerOptions{})
	l := seriesLimits(1_000_000, 100_000)
	const n = 100_000
	for i := range n {
		e.AdmitSeries(tenantA, l, "http_requests_total", uint64(i)*0x9e3779b97f4a7c15)
	}
	a := e.Admitter(tenantA, l, time.Now())
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if a.Admit("http_requests_total", uint64(i%n)*0x9e3779b97f4a7c15) != "" {
			b.Fatal("refused")
		}
		i++
	}
}

func BenchmarkAdmitterExistingSmall(b *testing.B) {
	e := NewEnforcer(EnforcerOptions{})
	l := seriesLimits(1_000_000, 100_000)
	const n = 1000 // fits in cache: the cost of the code, not of memory
	for i := range n {
		e.AdmitSeries(tenantA, l, "http_requests_total", uint64(i)*0x9e3779b97f4a7c15)
	}
	a := e.Admitter(tenantA, l, time.Now())
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if a.Admit("http_requests_total", uint64(i%n)*0x9e3779b97f4a7c15) != "" {
			b.Fatal("refused")
		}
		i++
	}
}
