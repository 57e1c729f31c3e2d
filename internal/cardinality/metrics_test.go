package cardinality

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardguard/cardguard/internal/tenant"
)

func TestRegister(t *testing.T) {
	t.Parallel()
	tr, _ := newTracker(t, Config{MaxTenants: 1})
	observe(tr, tenant.ID{AccountID: 1}, series("secret_metric", "secret_label", "secret_value"))
	observe(tr, tenant.ID{AccountID: 2}, series("m"))
	tr.Refresh()
	reg := prometheus.NewPedanticRegistry()
	if err := tr.Register(reg); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, lp := range m.GetLabel() {
				key += "{" + lp.GetName() + "=" + lp.GetValue() + "}"
			}
			got[key] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	for key, v := range map[string]float64{
		"cardguard_tenant_active_series{tenant=1:0}":           1,
		"cardguard_tenant_active_series{tenant=__overflow__}":  1,
		"cardguard_tenant_churn_window_series{tenant=1:0}":     1,
		"cardguard_cardinality_overflow_total{level=tenant}":   1,
		"cardguard_cardinality_overflow_total{level=metric}":   0,
		"cardguard_cardinality_tracked{level=tenant}":          2,
		"cardguard_cardinality_tracked{level=metric}":          2,
		"cardguard_cardinality_tracked{level=metric_label}":    1,
		"cardguard_cardinality_tracked{level=tenant_label}":    3,
		"cardguard_cardinality_last_refresh_timestamp_seconds": float64(tr.UpdatedAt().Unix()),
	} {
		if g, ok := got[key]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", key, g, ok, v)
		}
	}
	var sawMemory bool
	for _, mf := range mfs {
		if mf.GetName() == "cardguard_cardinality_sketch_memory_bytes" {
			sawMemory = mf.GetMetric()[0].GetGauge().GetValue() > 0
		}
		for _, m := range mf.GetMetric() {
			if s := m.String(); strings.Contains(s, "secret") {
				t.Errorf("traffic leaked into own metrics: %s", s)
			}
		}
	}
	if !sawMemory {
		t.Error("cardguard_cardinality_sketch_memory_bytes missing or zero")
	}
	if tr.MemoryBytes() <= 0 {
		t.Error("MemoryBytes = 0")
	}
}
