package adaptive

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cardguard/cardguard/internal/assets"
	"github.com/cardguard/cardguard/internal/namestats"
	"github.com/cardguard/cardguard/internal/queryaudit"
	"github.com/cardguard/cardguard/internal/tenant"
)

type assetBook struct {
	uses     map[string]assets.AssetUse
	problems int
}

func (b assetBook) Uses(tenant.ID) map[string]assets.AssetUse { return b.uses }
func (b assetBook) Problems(tenant.ID) int                    { return b.problems }

type nameStats struct {
	names map[string]namestats.NameStat
	st    namestats.Status
}

func (n nameStats) Stats(tenant.ID) (map[string]namestats.NameStat, namestats.Status) {
	return n.names, n.st
}

// TestOtherSources: a dashboard's label use keeps the label, and names the
// panel; VictoriaMetrics' count of reads nobody else explains withholds the
// metric; a source that cannot answer withholds every drop.
func TestOtherSources(t *testing.T) {
	t.Parallel()
	book := assetBook{uses: map[string]assets.AssetUse{
		"app_requests": {Labels: map[string]queryaudit.LabelUse{"pod": queryaudit.UseGrouping}, Refs: []assets.AssetRef{
			{Kind: "dashboard", File: "1:0/api.json", Title: "API", Panel: "by pod", Expr: "sum by (pod) (rate(app_requests[5m]))"},
		}},
	}}
	stats := nameStats{st: namestats.Status{Available: true}, names: map[string]namestats.NameStat{
		"node_cpu":     {Requests: 3, LastRequest: time.Now()},
		"app_requests": {Requests: 9, LastRequest: time.Now()},
	}}
	var epoch atomic.Int64
	e, _, _ := newTestEngine(t, workload(), &epoch, queriesUsing(), NewAssetSource(book), NewNameStatsSource(stats))
	l := e.Recommendations(context.Background(), tn, true)
	r := byMetric(l)["app_requests"]
	if strings.Join(r.Labels, ",") != "user_id" {
		t.Errorf("app_requests: %+v, want only user_id aggregated: the dashboard groups by pod", r)
	}
	for _, row := range r.Evidence.Labels {
		if row.Label == "pod" && (!row.Kept || len(row.Who) != 1 || !strings.Contains(row.Who[0].Name, "API / by pod")) {
			t.Errorf("pod evidence %+v", row)
		}
	}
	if _, ok := byMetric(l)["node_cpu"]; ok {
		t.Error("node_cpu is read per VictoriaMetrics, yet recommended")
	}
	if len(r.Evidence.Sources) != 3 {
		t.Errorf("sources checked %+v", r.Evidence.Sources)
	}

	stats.st = namestats.Status{Reason: "not polled yet"}
	delete(stats.names, "node_cpu")
	e, _, _ = newTestEngine(t, workload(), &epoch, queriesUsing(), NewAssetSource(book), NewNameStatsSource(stats))
	l = e.Recommendations(context.Background(), tn, true)
	if _, ok := byMetric(l)["node_cpu"]; ok || len(l.Withheld) == 0 || !strings.Contains(l.Withheld[0].Reason, "not polled yet") {
		t.Errorf("a source that cannot answer must withhold drops: %+v", l.Withheld)
	}
}
