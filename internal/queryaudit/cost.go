package queryaudit

import (
	"cmp"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/cardguard/cardguard/internal/tenant"
)

// Cost is what one forwarded read cost: its answer's status, the latency cardguard
// measured (until the whole answer was passed on) and VictoriaMetrics' own figures
// from the answer (query and query_range only; -1 when the answer had none).
type Cost struct {
	Status        int
	Latency       time.Duration
	SeriesFetched int64
	ExecMsec      int64
	// TimeRange is end - start of a query_range, 0 for an instant query.
	TimeRange time.Duration
}

// Caps on the cost attribution, per tenant. Entries idle for costIdle are
// forgotten; when a map is full the entry seen longest ago makes room.
const (
	maxCostQueries = 500
	maxCostSources = 200
	maxCostMetrics = 2000
	maxCostQuery   = 4 << 10 // longer query texts are kept cut, marked "..."
	costIdle       = 24 * time.Hour
)

// costTotals is what a query, source or metric cost so far.
type costTotals struct {
	queries, errors uint64
	latency         time.Duration
	stats           uint64 // answers with VictoriaMetrics' figures
	seriesFetched   uint64
	execMsec        uint64
	last            int64 // Unix ms
}

func (c *costTotals) add(k *Cost, ms int64) {
	c.queries++
	if k.Status/100 != 2 {
		c.errors++
	}
	c.latency += k.Latency
	if k.SeriesFetched >= 0 {
		c.stats++
		c.seriesFetched += uint64(k.SeriesFetched)
	}
	if k.ExecMsec >= 0 {
		c.execMsec += uint64(k.ExecMsec)
	}
	c.last = max(c.last, ms)
}

type queryKey struct {
	query string
	src   Source
}

type queryCost struct {
	costTotals
	timeRange time.Duration
}

// tenantCosts is one tenant's cost attribution. Guarded by costBook.mu.
type tenantCosts struct {
	queries map[queryKey]*queryCost
	sources map[Source]*costTotals
	metrics map[string]*costTotals
	dropped uint64 // reads not attributed: a cap was full of entries seen in the last second
}

// costBook holds every tenant's cost attribution, in memory, per replica.
type costBook struct {
	mu      sync.Mutex
	tenants map[tenant.ID]*tenantCosts
}

func (b *costBook) tenant(t tenant.ID, maxTenants int) *tenantCosts {
	if b.tenants == nil {
		b.tenants = map[tenant.ID]*tenantCosts{}
	}
	tc := b.tenants[t]
	if tc == nil {
		if len(b.tenants) >= maxTenants {
			return nil
		}
		tc = &tenantCosts{queries: map[queryKey]*queryCost{}, sources: map[Source]*costTotals{}, metrics: map[string]*costTotals{}}
		b.tenants[t] = tc
	}
	return tc
}

// add attributes one read to its query text, its source and every metric it read.
func (b *costBook) add(t tenant.ID, query string, src Source, metrics []string, c *Cost, at time.Time, maxTenants, maxNameBytes int) {
	ms := at.UnixMilli()
	b.mu.Lock()
	defer b.mu.Unlock()
	tc := b.tenant(t, maxTenants)
	if tc == nil {
		return
	}
	if query != "" {
		k := queryKey{query: clipString(query, maxCostQuery), src: src}
		qc := tc.queries[k]
		if qc == nil && makeRoom(tc.queries, maxCostQueries, func(q *queryCost) int64 { return q.last }) {
			k.query, k.src = strings.Clone(k.query), k.src.keep()
			qc = &queryCost{}
			tc.queries[k] = qc
		}
		if qc != nil {
			qc.add(c, ms)
			qc.timeRange = c.TimeRange
		} else {
			tc.dropped++
		}
	}
	st := tc.sources[src]
	if st == nil && makeRoom(tc.sources, maxCostSources, func(c *costTotals) int64 { return c.last }) {
		st = &costTotals{}
		tc.sources[src.keep()] = st
	}
	if st != nil {
		st.add(c, ms)
	}
	for _, m := range metrics {
		if len(m) > maxNameBytes {
			continue
		}
		mt := tc.metrics[m]
		if mt == nil && makeRoom(tc.metrics, maxCostMetrics, func(c *costTotals) int64 { return c.last }) {
			mt = &costTotals{}
			tc.metrics[strings.Clone(m)] = mt
		}
		if mt != nil {
			mt.add(c, ms)
		}
	}
}

// makeRoom reports whether m has room for one more entry, evicting the entry seen
// longest ago when it is full.
func makeRoom[K comparable, V any](m map[K]V, limit int, last func(V) int64) bool {
	if len(m) < limit {
		return true
	}
	var oldest K
	first := true
	var at int64
	for k, v := range m {
		if l := last(v); first || l < at {
			oldest, at, first = k, l, false
		}
	}
	delete(m, oldest)
	return true
}

// expire forgets entries idle since before cut (Unix ms).
func (b *costBook) expire(cut int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for t, tc := range b.tenants {
		for k, v := range tc.queries {
			if v.last < cut {
				delete(tc.queries, k)
			}
		}
		for k, v := range tc.sources {
			if v.last < cut {
				delete(tc.sources, k)
			}
		}
		for k, v := range tc.metrics {
			if v.last < cut {
				delete(tc.metrics, k)
			}
		}
		if len(tc.queries)+len(tc.sources)+len(tc.metrics) == 0 {
			delete(b.tenants, t)
		}
	}
}

// RecordCost is Record for every forwarded read, whatever VictoriaMetrics
// answered, with what it cost: the read's usage is recorded as by Record when the
// answer was 2xx, and its cost is attributed to its query text, its source and the
// metrics it read (top queries). It never blocks and keeps nothing of form or
// header.
func (r *Recorder) RecordCost(t tenant.ID, endpoint string, form url.Values, header http.Header, at time.Time, c Cost) {
	r.record(t, endpoint, form, header, at, &c)
}

// TopQueryEntry is one row of a top queries list: VictoriaMetrics' top_queries
// row (query, timeRangeSeconds, count, avg and sum duration) plus the source that
// sent it and VictoriaMetrics' own cost figures. Durations are cardguard's measured
// latencies; executionSeconds is VictoriaMetrics' executionTimeMsec summed.
type TopQueryEntry struct {
	AccountID          uint32   `json:"accountID"`
	ProjectID          uint32   `json:"projectID"`
	Query              string   `json:"query,omitempty"`
	TimeRangeSeconds   int64    `json:"timeRangeSeconds"`
	Source             *Source  `json:"source,omitempty"`
	Metric             string   `json:"metric,omitempty"`
	Count              uint64   `json:"count"`
	Errors             uint64   `json:"errors"`
	AvgDurationSeconds float64  `json:"avgDurationSeconds"`
	SumDurationSeconds float64  `json:"sumDurationSeconds"`
	SumExecutionSecs   float64  `json:"sumExecutionSeconds"`
	SumSeriesFetched   uint64   `json:"sumSeriesFetched"`
	AvgSeriesFetched   *float64 `json:"avgSeriesFetched,omitempty"`
	LastSeen           int64    `json:"lastSeen"`
}

// TopQueries is the answer of /usage/tenants/<t>/top_queries, in the shape of
// VictoriaMetrics' /api/v1/status/top_queries, for one tenant only.
type TopQueries struct {
	TopN                  string          `json:"topN"`
	MaxLifetime           string          `json:"maxLifetime"`
	TopByCount            []TopQueryEntry `json:"topByCount"`
	TopByAvgDuration      []TopQueryEntry `json:"topByAvgDuration"`
	TopBySumDuration      []TopQueryEntry `json:"topBySumDuration"`
	TopBySumSeriesFetched []TopQueryEntry `json:"topBySumSeriesFetched"`
	// Sources and metrics, by summed duration: which dashboards, rules and clients,
	// and which metrics, cost the most.
	TopSourcesBySumDuration []TopQueryEntry `json:"topSourcesBySumDuration"`
	TopMetricsBySumDuration []TopQueryEntry `json:"topMetricsBySumDuration"`
	// Dropped counts reads not attributed because the caps were full.
	Dropped uint64 `json:"dropped,omitempty"`
}

func entryOf(t tenant.ID, c *costTotals) TopQueryEntry {
	e := TopQueryEntry{
		AccountID: t.AccountID, ProjectID: t.ProjectID, Count: c.queries, Errors: c.errors,
		SumDurationSeconds: c.latency.Seconds(), SumExecutionSecs: float64(c.execMsec) / 1000,
		SumSeriesFetched: c.seriesFetched, LastSeen: c.last,
	}
	if c.queries > 0 {
		e.AvgDurationSeconds = e.SumDurationSeconds / float64(c.queries)
	}
	if c.stats > 0 {
		avg := float64(c.seriesFetched) / float64(c.stats)
		e.AvgSeriesFetched = &avg
	}
	return e
}

// TopQueries returns tenant t's top n queries by count, average and summed
// duration and summed series fetched, and its top sources and metrics. Only t's
// own queries are ever in it: it is safe to show the tenant.
func (r *Recorder) TopQueries(t tenant.ID, n int) TopQueries {
	out := TopQueries{TopN: strconv.Itoa(n), MaxLifetime: costIdle.String()}
	var qs, srcs, mets []TopQueryEntry
	r.costs.mu.Lock()
	if tc := r.costs.tenants[t]; tc != nil {
		for k, v := range tc.queries {
			e := entryOf(t, &v.costTotals)
			e.Query, e.TimeRangeSeconds = k.query, int64(v.timeRange.Seconds())
			s := k.src
			e.Source = &s
			qs = append(qs, e)
		}
		for k, v := range tc.sources {
			e := entryOf(t, v)
			s := k
			e.Source = &s
			srcs = append(srcs, e)
		}
		for k, v := range tc.metrics {
			e := entryOf(t, v)
			e.Metric = k
			mets = append(mets, e)
		}
		out.Dropped = tc.dropped
	}
	r.costs.mu.Unlock()
	top := func(in []TopQueryEntry, key func(*TopQueryEntry) float64) []TopQueryEntry {
		s := slices.Clone(in)
		slices.SortStableFunc(s, func(a, b TopQueryEntry) int {
			if c := cmp.Compare(key(&b), key(&a)); c != 0 {
				return c
			}
			if c := strings.Compare(a.Query, b.Query); c != 0 {
				return c
			}
			if c := strings.Compare(a.Metric, b.Metric); c != 0 {
				return c
			}
			return compareSources(derefSource(a.Source), derefSource(b.Source))
		})
		if len(s) > n {
			s = s[:n]
		}
		if s == nil {
			s = []TopQueryEntry{}
		}
		return s
	}
	out.TopByCount = top(qs, func(e *TopQueryEntry) float64 { return float64(e.Count) })
	out.TopByAvgDuration = top(qs, func(e *TopQueryEntry) float64 { return e.AvgDurationSeconds })
	out.TopBySumDuration = top(qs, func(e *TopQueryEntry) float64 { return e.SumDurationSeconds })
	out.TopBySumSeriesFetched = top(qs, func(e *TopQueryEntry) float64 { return float64(e.SumSeriesFetched) })
	out.TopSourcesBySumDuration = top(srcs, func(e *TopQueryEntry) float64 { return e.SumDurationSeconds })
	out.TopMetricsBySumDuration = top(mets, func(e *TopQueryEntry) float64 { return e.SumDurationSeconds })
	return out
}

func derefSource(s *Source) Source {
	if s == nil {
		return Source{}
	}
	return *s
}

func (r *Recorder) serveTopQueries(w http.ResponseWriter, req *http.Request) {
	t, err := tenant.Parse(chi.URLParam(req, "tenant"))
	if err != nil {
		writeUsageError(w, http.StatusBadRequest, "bad tenant: "+err.Error())
		return
	}
	n, err := intParam(req.URL.Query(), "topN", 20, 1, 1000)
	if err != nil {
		writeUsageError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeUsageJSON(w, r.TopQueries(t, n))
}

// addCost attributes a processed read's cost; uses are the metrics it read.
func (r *Recorder) addCost(ev usageEvent, uses map[string]*metricRead) {
	q := ev.query
	if ev.kind != readQuery {
		q = strings.Join(ev.matches, ", ")
	}
	var metrics []string
	if ev.cost.Status/100 == 2 {
		metrics = slices.Sorted(maps.Keys(uses))
	}
	r.costs.add(ev.tenant, q, ev.src.clipped(), metrics, ev.cost, ev.at, r.cfg.MaxTenants, r.cfg.MaxNameBytes)
}
