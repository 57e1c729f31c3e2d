package adaptive

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cardguard/cardguard/internal/queryaudit"
	"github.com/cardguard/cardguard/internal/tenant"
)

// UsageRecorder is the query usage of queryaudit.Recorder.
type UsageRecorder interface {
	Usage(t tenant.ID) (queryaudit.Window, queryaudit.TenantTotals, map[string]queryaudit.MetricUsage)
}

// QuerySource is the evidence of the queries that went through cardguard, over
// the usage retention: labels used, how, when, and who read each metric. Who
// used each label comes from the Readers, which learn it from live reads.
type QuerySource struct {
	rec     UsageRecorder
	readers *Readers
}

// NewQuerySource returns the source over rec; readers may be nil.
func NewQuerySource(rec UsageRecorder, readers *Readers) *QuerySource {
	return &QuerySource{rec: rec, readers: readers}
}

// Name implements Source.
func (q *QuerySource) Name() string { return "queries" }

// Evidence implements Source.
func (q *QuerySource) Evidence(t tenant.ID) (map[string]MetricEvidence, SourceStatus) {
	win, totals, uses := q.rec.Usage(t)
	out := make(map[string]MetricEvidence, len(uses))
	var shared map[string][]Ref
	if q.readers != nil {
		shared = q.readers.sharedNotSummed(t, win.From)
	}
	for name, u := range uses {
		ev := MetricEvidence{
			Reads:       u.Queries,
			LabelsKnown: u.LabelsOverflow == 0,
			AllLabels:   u.AllLabelsQueries > 0,
			Labels:      make(map[string]LabelEvidence, len(u.Labels)),
		}
		if u.LastQueried > 0 {
			ev.Last = time.UnixMilli(u.LastQueried).UTC()
		}
		for _, l := range u.Labels {
			le := LabelEvidence{Uses: l.Uses}
			if l.LastUsed != nil {
				le.Last = *l.LastUsed
			}
			if q.readers != nil {
				le.Who = q.readers.label(t, name, l.Label)
			}
			ev.Labels[l.Label] = le
		}
		for _, s := range u.Sources {
			r := refOf(s.Source)
			if s.LastQueried != nil {
				r.Last = *s.LastQueried
			}
			ev.Refs = append(ev.Refs, r)
		}
		if q.readers != nil {
			ev.Refs = append(ev.Refs, q.readers.whole(t, name)...)
			ev.NotSummed = dedupRefs(append(q.readers.notSummed(t, name), shared[name]...), maxRefsPerKey*2)
		}
		if totals.UnresolvedReads > 0 {
			// {__name__=~"app_.*"} by (pod) over more metrics than one
			// selector is credited to: it uses labels, of metrics unknown.
			ev.NotSummed = append(ev.NotSummed, Ref{Kind: "query", Name: fmt.Sprintf(
				"%d reads with a selector without a metric name could not be credited to the metrics they select: they may use any label of this metric", totals.UnresolvedReads)})
		}
		out[name] = ev
	}
	st := SourceStatus{OK: true, Since: win.From, Detail: "queries read through cardguard"}
	switch {
	case totals.UnparsedQueries+totals.DroppedEvents > 0:
		// A read nobody parsed may read any metric with any label.
		st.OK = false
		st.Detail = fmt.Sprintf("%d reads through cardguard in the retention were not parsed or not recorded (queue full): they may read any metric",
			totals.UnparsedQueries+totals.DroppedEvents)
	case totals.UnresolvedReads > 0:
		// {__name__=~"app_.*"} over more metrics than one selector is
		// credited to: the metrics it reads look unread.
		st.OK = false
		st.Detail = fmt.Sprintf("%d reads through cardguard in the retention have a selector without a metric name that could not be credited to the metrics it selects (too many of them, or none known yet): they may read any metric",
			totals.UnresolvedReads)
	case totals.OverflowReads > 0:
		// The reads of the metrics past the cap were not recorded.
		st.OK = false
		st.Detail = fmt.Sprintf("%d reads through cardguard in the retention read metrics that were not recorded (query_audit.max_metrics_per_tenant, or the usage snapshot's size): any metric may be one of them",
			totals.OverflowReads)
	}
	return out, st
}

// refOf names the reader of a query usage source.
func refOf(s queryaudit.Source) Ref {
	switch s.Kind {
	case "alert":
		name := s.RuleName
		if name == "" {
			name = s.RuleUID
		}
		if s.RuleFolder != "" {
			name = s.RuleFolder + "/" + name
		}
		return Ref{Kind: "rule", Name: name}
	case "grafana":
		if s.DashboardUID != "" || s.DashboardTitle != "" {
			name := s.DashboardTitle
			if name == "" {
				name = s.DashboardUID
			}
			if s.PanelTitle != "" || s.PanelID != "" {
				name += " / " + firstNonEmpty(s.PanelTitle, "panel "+s.PanelID)
			}
			return Ref{Kind: "dashboard", Name: name}
		}
		return Ref{Kind: "user", Name: s.User}
	case "client":
		return Ref{Kind: "client", Name: s.UserAgent}
	}
	return Ref{Kind: "unknown", Name: "unknown client"}
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// Readers remembers, from live reads, the last few queries that used each
// label of each metric, and those that read a metric with all its labels. It
// is bounded (maxReaderKeys metrics, maxRefsPerKey queries per label, maxRefs
// in all, queries clipped to maxQueryBytes: about 30 MiB at most), in memory,
// and per replica: it adds names to the evidence; the decisions rest on the
// usage retention of the sources. Safe for concurrent use.
type Readers struct {
	mu        sync.Mutex
	keys      map[readerKey]*readerEntry
	perTenant map[tenant.ID]int // keys per tenant, at most maxReaderKeysPerTenant
	refs      int               // refs held in keys
	// summed caches sumsFirst: dashboards repeat the same queries.
	summed      map[summedKey]string
	summedBytes int
	shared      *sharedReads // shared.go; nil: this replica's reads only
	// unkept is when each tenant last had a read that does not sum first
	// that the caps kept out (a key or a reference refused): any metric of
	// the tenant may be read so. unkeptAll stands for every tenant once
	// unkept is full.
	unkept    map[tenant.ID]time.Time
	unkeptAll time.Time
}

type summedKey struct{ query, metric string }

// The cache of sumsFirst answers holds queries up to maxSummedQuery bytes,
// maxSummedBytes in all; it is emptied when full.
const (
	maxSummedQuery = 4 << 10
	maxSummedBytes = 4 << 20
)

// maxReaderKeysPerTenant keeps one tenant reading made-up metric names from
// filling the table for all: past its share, only that tenant's reads go
// unkept (and withhold its own recommendations).
const (
	maxReaderKeys          = 20000
	maxReaderKeysPerTenant = maxReaderKeys / 4
	maxRefsPerKey          = 5
	maxRefs                = 50000
	maxQueryBytes          = 512
)

type readerKey struct {
	t      tenant.ID
	metric string
}

type readerEntry struct {
	labels    map[string][]Ref
	whole     []Ref
	notSummed []Ref
}

// NewReaders returns an empty Readers.
func NewReaders() *Readers {
	return &Readers{keys: make(map[readerKey]*readerEntry), perTenant: make(map[tenant.ID]int), summed: make(map[summedKey]string), unkept: make(map[tenant.ID]time.Time)}
}

// whyNotSummed is sumsFirst's reason, "" when the read sums first; rs.mu held.
func (rs *Readers) whyNotSummed(query, metric string) string {
	k := summedKey{query, metric}
	if why, ok := rs.summed[k]; ok {
		return why
	}
	_, why := sumsFirst(query, metric)
	if len(query) > maxSummedQuery {
		return why
	}
	if rs.summedBytes >= maxSummedBytes {
		clear(rs.summed)
		rs.summedBytes = 0
	}
	rs.summed[k] = why
	rs.summedBytes += len(query) + len(metric) + len(why) + 64
	return why
}

// OnRead implements queryaudit.ReadListener.
func (rs *Readers) OnRead(rd *queryaudit.Read) {
	ref := refOf(rd.Source)
	ref.Query = clip(rd.Query, maxQueryBytes)
	ref.Last = rd.At.UTC()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for name, mu := range rd.Metrics {
		k := readerKey{rd.Tenant, name}
		e := rs.keys[k]
		if e == nil {
			if len(rs.keys) >= maxReaderKeys || rs.perTenant[rd.Tenant] >= maxReaderKeysPerTenant {
				if !mu.AllLabels && rs.whyNotSummed(rd.Query, name) != "" {
					rs.markUnkept(rd.Tenant, ref.Last)
				}
				continue
			}
			e = &readerEntry{labels: make(map[string][]Ref)}
			rs.keys[readerKey{rd.Tenant, clip(name, 256)}] = e
			rs.perTenant[rd.Tenant]++
		}
		if mu.AllLabels {
			e.whole = rs.addRef(e.whole, ref)
		} else if why := rs.whyNotSummed(rd.Query, name); why != "" {
			r := ref
			r.Name += ": " + why
			if e.notSummed = rs.addRef(e.notSummed, r); len(e.notSummed) == 0 {
				rs.markUnkept(rd.Tenant, ref.Last)
			}
			rs.publish(k, r)
		}
		for l := range mu.Labels {
			if _, ok := e.labels[l]; !ok && len(e.labels) >= 100 {
				continue
			}
			e.labels[l] = rs.addRef(e.labels[l], ref)
		}
	}
}

// addRef puts r first, replacing an older ref of the same query and reader,
// keeping maxRefsPerKey, and maxRefs in all; rs.mu held.
func (rs *Readers) addRef(refs []Ref, r Ref) []Ref {
	n := len(refs)
	refs = slices.DeleteFunc(refs, func(x Ref) bool { return x.Kind == r.Kind && x.Name == r.Name && x.Query == r.Query })
	if len(refs) == n && n < maxRefsPerKey && rs.refs >= maxRefs {
		return refs // a new ref would grow the total over the cap
	}
	refs = slices.Insert(refs, 0, r)
	if len(refs) > maxRefsPerKey {
		refs = refs[:maxRefsPerKey]
	}
	rs.refs += len(refs) - n
	return refs
}

func (rs *Readers) label(t tenant.ID, metric, label string) []Ref {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if e := rs.keys[readerKey{t, metric}]; e != nil {
		return slices.Clone(e.labels[label])
	}
	return nil
}

// markUnkept notes that a read of t that does not sum first was not kept;
// rs.mu held.
func (rs *Readers) markUnkept(t tenant.ID, at time.Time) {
	if _, ok := rs.unkept[t]; !ok && len(rs.unkept) >= maxReaderKeys {
		rs.unkeptAll = at
		return
	}
	rs.unkept[t] = at
}

func (rs *Readers) notSummed(t tenant.ID, metric string) []Ref {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var out []Ref
	if e := rs.keys[readerKey{t, metric}]; e != nil {
		out = slices.Clone(e.notSummed)
	}
	last := rs.unkept[t]
	if rs.unkeptAll.After(last) {
		last = rs.unkeptAll
	}
	if !last.IsZero() {
		// Which metric that read combined is not known: it may be this one.
		out = append(out, Ref{Kind: "query", Last: last,
			Name: "a read that combines series other than by a sum was not kept (the readers are full): it may read this metric"})
	}
	return out
}

func (rs *Readers) whole(t tenant.ID, metric string) []Ref {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if e := rs.keys[readerKey{t, metric}]; e != nil {
		return slices.Clone(e.whole)
	}
	return nil
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
