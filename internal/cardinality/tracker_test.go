package cardinality

import (
	"math"
	"strconv"
	"sync"
	"testing"
	"time"

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
