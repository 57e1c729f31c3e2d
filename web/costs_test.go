package web

import (
	"strings"
	"testing"
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
)

type fakeCosts map[tenant.ID]CostlyQueries

func (f fakeCosts) CostlyQueries(t tenant.ID, n int) CostlyQueries {
	c := f[t]
	c.Since = "since start"
	c.Sources, c.Queries = c.Sources[:min(n, len(c.Sources))], c.Queries[:min(n, len(c.Queries))]
	return c
}

// TestCostlyQueriesGolden: the tenant page's "Costly queries" panel, with figures
// and empty; without Options.Costs the page has no panel (the other golden files).
func TestCostlyQueriesGolden(t *testing.T) {
	t.Parallel()
	src := newFake()
	costs := fakeCosts{tenant.MustParse("1"): {
		Sources: []CostRow{
			{Name: "Costly board / panel 2", Kind: "grafana", Count: 40, SumSeconds: 12.5, AvgSeconds: 0.3125, SeriesFetched: 400_000},
			{Name: "vmalert/1.150", Kind: "client", Count: 900, Errors: 3, SumSeconds: 0.9, AvgSeconds: 0.001, SeriesFetched: 900},
		},
		Queries: []CostRow{
			{Name: `count({__name__=~"shop_.*"})`, Count: 40, SumSeconds: 12.5, AvgSeconds: 0.3125, SeriesFetched: 400_000},
			{Name: `up{job="<script>"}`, Count: 900, Errors: 3, SumSeconds: 0.9, AvgSeconds: 0.001, SeriesFetched: 900},
		},
	}}
	u, err := New(Options{Tenants: src, Metrics: src, Limits: src, Costs: costs, PageSize: 2, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	_, _, body := get(t, u, "/fragment/tenant?tenant=1")
	i := strings.Index(body, `<section class="costly"`)
	if i < 0 {
		t.Fatalf("no costly queries panel:\n%s", body)
	}
	golden(t, "tenant_costly.html", body[i:])
	if strings.Contains(body, "<script>") {
		t.Error("a query text was not escaped")
	}
	_, _, body = get(t, u, "/fragment/tenant?tenant=2")
	if !strings.Contains(body, "No query of this tenant went through cardguard since start.") {
		t.Errorf("empty panel missing:\n%s", body)
	}
}
