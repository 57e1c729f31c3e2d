package guard

import (
	"strconv"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/cespare/xxhash/v2"

	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/tenant"
)

func seriesOf(v string) ([]prompb.Label, uint64) {
	ls := []prompb.Label{{Name: "__name__", Value: "m"}, {Name: "user", Value: v}}
	return ls, xxhash.Sum64String("m\xffuser\xff" + v)
}

// TestCheckerWindows: in a new window the values of old series compete for
// admission again, first come, so the bound of MaxValuesPerLabel values holds per
// window.
func TestCheckerWindows(t *testing.T) {
	t.Parallel()
	now := time.Unix(3600*100, 0)
	g := New(Options{Window: time.Hour, Now: func() time.Time { return now }})
	p := &limits.LabelGuard{MaxValuesPerLabel: 2, Action: limits.GuardOverflowValue}
	tn := tenant.MustParse("1")
	check := func(v string) Outcome {
		c := g.Checker(tn, p, now, false)
		ls, _ := seriesOf(v)
		_, res := c.Check("m", ls, nil)
		return res.Outcome
	}
	for _, step := range []struct {
		v    string
		want Outcome
	}{{"a", Pass}, {"b", Pass}, {"a", Pass}, {"c", Rewritten}, {"b", Pass}} {
		if got := check(step.v); got != step.want {
			t.Fatalf("window 1, %s: %v, want %v", step.v, got, step.want)
		}
	}
	now = now.Add(time.Hour)
	for _, step := range []struct {
		v    string
		want Outcome
	}{{"c", Pass}, {"a", Pass}, {"b", Rewritten}, {"a", Pass}} {
		if got := check(step.v); got != step.want {
			t.Fatalf("window 2, %s: %v, want %v", step.v, got, step.want)
		}
	}
}

// TestCheckerMatchesCheck: Checker and Check decide the same on the same stream.
func TestCheckerMatchesCheck(t *testing.T) {
	t.Parallel()
	now := time.Unix(0, 0)
	clock := func() time.Time { return now }
	g1 := New(Options{Now: clock})
	g2 := New(Options{Now: clock})
	p := &limits.LabelGuard{MaxValuesPerLabel: 50, Action: limits.GuardDropSeries}
	tn := tenant.MustParse("3")
	for i := 0; i < 1000; i++ {
		v := strconv.Itoa(i % 120)
		ls, _ := seriesOf(v)
		_, r1 := g1.Check(tn, p, "m", ls, nil, false)
		_, r2 := g2.Checker(tn, p, now, false).Check("m", ls, nil)
		if r1.Outcome != r2.Outcome {
			t.Fatalf("series %d (%s): Check %v, Checker %v", i, v, r1.Outcome, r2.Outcome)
		}
	}
}

func BenchmarkChecker(b *testing.B) {
	g := New(Options{})
	p := &limits.LabelGuard{MaxValuesPerLabel: 100000}
	tn := tenant.MustParse("1")
	ls := []prompb.Label{{Name: "__name__", Value: "http_requests_total"}}
	for i := 0; i < 9; i++ {
		ls = append(ls, prompb.Label{Name: "label_" + strconv.Itoa(i), Value: "value_" + strconv.Itoa(i)})
	}
	now := time.Now()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		c := g.Checker(tn, p, now, false)
		_, _ = c.Check("http_requests_total", ls, nil)
	}
}
