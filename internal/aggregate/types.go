package aggregate

import (
	"strings"
	"sync"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/tenant"
)

// Types remembers the metric types that remote-write metadata (1.0 metadata, 2.0
// per-series types) declared, per tenant and metric family, so that a counter
// whose name says nothing (no _total) is aggregated as a counter. Bounded: past
// max families in all, new ones are not remembered and their series are typed
// by name. Safe for concurrent use.
type Types struct {
	max int

	mu sync.RWMutex
	n  int
	m  map[tenant.ID]map[string]prompb.MetricType
}

// NewTypes remembers at most max families in all.
func NewTypes(max int) *Types {
	return &Types{max: max, m: map[tenant.ID]map[string]prompb.MetricType{}}
}

// Learn records that family has type typ in tenant t. Unknown types are ignored.
func (ts *Types) Learn(t tenant.ID, family string, typ prompb.MetricType) {
	if family == "" || typ == prompb.MetricTypeUnknown || typ > prompb.MetricTypeStateset {
		return
	}
	ts.mu.RLock()
	cur, ok := ts.m[t][family]
	ts.mu.RUnlock()
	if ok && cur == typ {
		return
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	fam := ts.m[t]
	if _, ok := fam[family]; !ok {
		if ts.n >= ts.max {
			return
		}
		ts.n++
	}
	if fam == nil {
		fam = map[string]prompb.MetricType{}
		ts.m[t] = fam
	}
	fam[strings.Clone(family)] = typ
}

// KindOf is how the series of metric in tenant t combine: as the metadata of
// its family says, or else by its name (KindOf).
func (ts *Types) KindOf(t tenant.ID, metric string) Kind {
	if ts != nil {
		ts.mu.RLock()
		fam := ts.m[t]
		typ, ok := fam[metric]
		suffix := ""
		if !ok {
			for _, s := range [...]string{"_bucket", "_count", "_sum", "_total", "_gcount", "_gsum"} {
				if base, found := strings.CutSuffix(metric, s); found {
					if typ, ok = fam[base]; ok {
						suffix = s
						break
					}
				}
			}
		}
		ts.mu.RUnlock()
		if ok {
			switch typ {
			case prompb.MetricTypeCounter, prompb.MetricTypeHistogram:
				return Counter
			case prompb.MetricTypeSummary:
				// A summary's _sum and _count are counters; its quantiles are
				// not, and are gauges here.
				if suffix == "_sum" || suffix == "_count" {
					return Counter
				}
				return Gauge
			case prompb.MetricTypeGauge, prompb.MetricTypeGaugeHistogram, prompb.MetricTypeInfo, prompb.MetricTypeStateset:
				return Gauge
			}
		}
	}
	return KindOf(metric)
}
