package adaptive

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
)

// ownCounter is the test counter with the memory of its reads that Upstream
// has.
type ownCounter struct {
	*counter
	at time.Time
}

func (c ownCounter) LastRead(tenant.ID, string) time.Time { return c.at }

// TestReaderOutsideCardguard: VictoriaMetrics saw app_requests read after
// every read through cardguard, so someone reads it directly, with labels
// nobody can name: it is withheld, and stays withheld once VictoriaMetrics'
// last read is no longer the latest. A read that late from cardguard's own
// estimate query, a read within the slack, or a dashboard naming the metric
// explains it.
func TestReaderOutsideCardguard(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	queries := queriesUsing()
	ev := queries.ev["app_requests"]
	ev.Last = t0
	queries.ev["app_requests"] = ev
	vm := fixedSource{name: nameStatsSource, st: SourceStatus{OK: true}, ev: map[string]MetricEvidence{
		"app_requests": {Reads: 5000, Last: t0.Add(5 * time.Second)},
	}}
	var epoch atomic.Int64
	e, _, _ := newTestEngine(t, workload(), &epoch, queries, vm)
	recs := func() (map[string]Recommendation, map[string]Withheld) {
		l := e.Recommendations(context.Background(), tn, true)
		w := map[string]Withheld{}
		for _, x := range l.Withheld {
			w[x.Metric] = x
		}
		return byMetric(l), w
	}

	// Within the slack: the read cardguard proxied.
	if r, w := recs(); r["app_requests"].Kind != KindAggregate {
		t.Fatalf("a VictoriaMetrics read 5s after cardguard's: %+v withheld %+v, want aggregate", r["app_requests"], w["app_requests"])
	}

	// A minute after cardguard's last read: someone else.
	vm.ev["app_requests"] = MetricEvidence{Reads: 6000, Last: t0.Add(time.Minute)}
	if r, w := recs(); r["app_requests"].Kind != "" || w["app_requests"].Reason == "" {
		t.Fatalf("read outside cardguard: recommended %+v, withheld %+v", r["app_requests"], w["app_requests"])
	}
	// cardguard reads again later: the outside reader is remembered.
	ev.Last = t0.Add(2 * time.Minute)
	queries.ev["app_requests"] = ev
	if r, _ := recs(); r["app_requests"].Kind != "" {
		t.Fatalf("outside reader forgotten: %+v", r["app_requests"])
	}
	// Unless a dashboard names the metric: it may be the outside reader.
	assets := fixedSource{name: "assets", st: SourceStatus{OK: true}, ev: map[string]MetricEvidence{
		"app_requests": {Reads: 1, LabelsKnown: true, Labels: map[string]LabelEvidence{"instance": {Uses: []string{"grouping"}}}},
	}}
	e.AddSource(assets)
	if r, w := recs(); r["app_requests"].Kind != KindAggregate {
		t.Fatalf("with a dashboard naming it: %+v withheld %+v", r["app_requests"], w["app_requests"])
	}

	// cardguard's own estimate query is no outside reader.
	queries2 := queriesUsing()
	ev2 := queries2.ev["app_requests"]
	ev2.Last = t0
	queries2.ev["app_requests"] = ev2
	vm2 := fixedSource{name: nameStatsSource, st: SourceStatus{OK: true}, ev: map[string]MetricEvidence{
		"app_requests": {Reads: 5000, Last: t0.Add(time.Minute)},
	}}
	e2, _, _ := newTestEngine(t, workload(), &epoch, queries2, vm2)
	e2.o.Counter = ownCounter{counter: &counter{s: workload()}, at: t0.Add(time.Minute)}
	if r := byMetric(e2.Recommendations(context.Background(), tn, true)); r["app_requests"].Kind != KindAggregate {
		t.Fatalf("cardguard's own read taken for an outside reader: %+v", r["app_requests"])
	}
}
