package adaptive

import (
	"sync"
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
)

// A reader that bypasses cardguard (a Grafana or vmalert pointed at vmselect)
// uses labels no source can name. metric_names_stats counts its reads, but
// VictoriaMetrics counts one read per series a search touches, so its counts
// cannot be compared with cardguard's. Its last read time can: when
// VictoriaMetrics saw the metric read later than every read cardguard knows of
// (the queries it proxied and its own estimate queries), someone else read it.
// Such a metric is neither aggregated nor has series dropped, for the
// retention of the query usage.
//
// What it cannot see: an outside reader whose reads are never the latest at a
// poll (a rule every minute on a metric a dashboard refreshes every 10s
// through cardguard is caught only when a poll follows the rule's evaluation
// more closely than the dashboard's refresh). It errs towards "read outside":
// a query through cardguard that VictoriaMetrics ran for longer than
// outsideSlack, or answered with an error (no usage is recorded then), looks
// like an outside read.

// nameStatsSource is the name of the source that counts every reader.
const nameStatsSource = "metric_names_stats"

// outsideSlack covers the time between a read's arrival at cardguard and its
// search in VictoriaMetrics, and the truncation of VictoriaMetrics' timestamps
// to seconds.
const outsideSlack = 10 * time.Second

// maxOutsidePerTenant bounds the metrics remembered as read outside per tenant;
// past it, the oldest is forgotten.
const maxOutsidePerTenant = 10000

// OwnReads is a Counter that remembers when it last read each metric from the
// upstream: VictoriaMetrics counts those reads too.
type OwnReads interface {
	LastRead(t tenant.ID, metric string) time.Time
}

// outsideBook remembers, per tenant and metric, the last read VictoriaMetrics
// saw that cardguard cannot account for.
type outsideBook struct {
	mu sync.Mutex
	m  map[tenant.ID]map[string]time.Time
}

// check updates and returns the last outside read of metric: zero when none
// since since. answers are the sources' evidence; own is when cardguard itself
// last read the metric from the upstream.
func (b *outsideBook) check(t tenant.ID, metric string, answers []sourceAnswer, own, since time.Time) time.Time {
	var vmLast, known time.Time
	for _, a := range answers {
		ev, ok := a.ev[metric]
		if !ok || !ev.used() {
			continue
		}
		switch {
		case a.name == nameStatsSource:
			vmLast = ev.Last
		case a.name == "assets":
			// A dashboard or rule file names the metric: a reader outside
			// cardguard may be that asset, whose labels are known.
			b.forget(t, metric)
			return time.Time{}
		case ev.Last.After(known):
			known = ev.Last
		}
	}
	if own.After(known) {
		known = own
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = make(map[tenant.ID]map[string]time.Time)
	}
	tm := b.m[t]
	if !vmLast.IsZero() && vmLast.After(known.Add(outsideSlack)) {
		if tm == nil {
			tm = make(map[string]time.Time)
			b.m[t] = tm
		}
		if _, ok := tm[metric]; !ok && len(tm) >= maxOutsidePerTenant {
			oldest, at := "", time.Time{}
			for k, v := range tm {
				if oldest == "" || v.Before(at) {
					oldest, at = k, v
				}
			}
			delete(tm, oldest)
		}
		if vmLast.After(tm[metric]) {
			tm[metric] = vmLast
		}
	}
	last, ok := tm[metric]
	if !ok {
		return time.Time{}
	}
	if !since.IsZero() && last.Before(since) {
		delete(tm, metric)
		return time.Time{}
	}
	return last
}

func (b *outsideBook) forget(t tenant.ID, metric string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.m[t], metric)
}
