package web

import (
	"cmp"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// gauge is a usage bar: Pct of the limit used (capped at 100 for drawing).
type gauge struct {
	HasLimit bool
	Pct      float64 // 0..100, for the bar
	RawPct   float64 // uncapped, for the text
	Level    string  // ok, warn, crit; "none" without a limit
	Text     string
	Title    string
}

// newGauge measures used against limit (0: none); unit follows the numbers.
func newGauge(used, limit float64, unit string) gauge {
	if limit <= 0 {
		return gauge{Level: "none", Text: fmtCompact(used) + unit + " · no limit", Title: fmtNum(used) + unit + ", no limit set"}
	}
	p := used / limit * 100
	g := gauge{HasLimit: true, RawPct: p, Pct: round1(min(max(p, 0), 100)), Level: "ok"}
	g.Text = fmtCompact(used) + unit + " of " + fmtCompact(limit) + unit + " (" + strconv.FormatFloat(p, 'f', 0, 64) + "%)"
	g.Title = fmtNum(used) + unit + " of " + fmtNum(limit) + unit
	switch {
	case p >= 100:
		g.Level = "crit"
	case p >= 80:
		g.Level = "warn"
	}
	return g
}

// ---- overview ----

type overviewView struct {
	Title       string
	Base        string
	Rows        []tenantView
	TotalSeries int64
	TotalRate   float64
	Discarded   int64
	Chart       *chartView
	// Aggregating is set when some tenant has series aggregated or collided:
	// without, the overview leaves the column out.
	Aggregating bool
}

type tenantView struct {
	TenantRow
	Link       string
	LimitsLink string
	Series     gauge
	Rate       gauge
	Discarded  int64
	DryRun     int64
	TopReason  string
}

func (u *UI) overview(_ *http.Request) (int, string, any) {
	rows := u.o.Tenants.Tenants()
	slices.SortFunc(rows, func(a, b TenantRow) int {
		if c := cmp.Compare(b.ActiveSeries, a.ActiveSeries); c != 0 {
			return c
		}
		return strings.Compare(a.Tenant, b.Tenant)
	})
	v := overviewView{Title: "Overview", Base: u.o.Base}
	for _, r := range rows {
		tv := tenantView{
			TenantRow: r,
			Series:    seriesGauge(r),
			Rate:      newGauge(round1(r.IngestionRate), r.IngestionLimit, "/s"),
		}
		if !r.Overflow {
			tv.Link = u.link("/tenant", "tenant", r.Tenant)
			tv.LimitsLink = u.link("/limits", "tenant", r.Tenant)
		}
		var top int64
		for _, reason := range sortedKeys(r.Discarded) {
			n := r.Discarded[reason]
			tv.Discarded += n
			if n > top {
				top, tv.TopReason = n, reason
			}
		}
		for _, n := range r.DryRunDiscarded {
			tv.DryRun += n
		}
		v.TotalSeries += r.ActiveSeries
		v.TotalRate += r.IngestionRate
		v.Discarded += tv.Discarded
		v.Aggregating = v.Aggregating || r.Aggregated.OutputSeries > 0 || r.Aggregated.Collisions > 0
		v.Rows = append(v.Rows, tv)
	}
	if u.o.History != nil {
		v.Chart = newChart(u.o.History.Points(), u.o.History.Interval(), u.o.History.Span(), u.o.Now())
	}
	return http.StatusOK, "overview", v
}

// seriesGauge measures what the limit caps: the admitted series where the
// limiter counts them, and says how many were sent when that is more.
func seriesGauge(r TenantRow) gauge {
	if !r.HasAdmitted {
		return newGauge(float64(r.ActiveSeries), float64(r.MaxSeries), "")
	}
	g := newGauge(float64(r.AdmittedSeries), float64(r.MaxSeries), "")
	if r.ActiveSeries > r.AdmittedSeries {
		g.Text += " · " + fmtCompact(float64(r.ActiveSeries)) + " sent"
		g.Title += " admitted; " + fmtNum(float64(r.ActiveSeries)) + " distinct series sent (estimate)"
	}
	return g
}

// ---- rejections chart ----

const (
	chartW = 720.0
	chartH = 150.0
)

type chartView struct {
	W, H   float64
	ViewH  float64 // H plus room for the top and the axis
	Rects  []chartRect
	Legend []legendItem
	Max    int64
	Span   string
	Ticks  []chartTick
	Empty  bool
	Total  int64
}

type chartRect struct {
	X, Y, W, H float64
	Class      string
	Title      string
}

type legendItem struct {
	Reason string
	Class  string
	Total  int64
}

type chartTick struct {
	X     float64
	Label string
}

// newChart draws stacked columns, one per sampling interval, ending at now and
// covering span; reasons are coloured by their rank in a fixed palette.
func newChart(points []Point, interval, span time.Duration, now time.Time) *chartView {
	c := &chartView{W: chartW, H: chartH, ViewH: chartH + 3, Span: fmtDuration(span)}
	totals := map[string]int64{}
	for _, p := range points {
		var sum int64
		for r, n := range p.ByReason {
			totals[r] += n
			sum += n
		}
		c.Max = max(c.Max, sum)
	}
	reasons := sortedKeys(totals)
	slices.SortStableFunc(reasons, func(a, b string) int { return cmp.Compare(totals[b], totals[a]) })
	class := map[string]string{}
	for i, r := range reasons {
		class[r] = "s" + strconv.Itoa(i%8)
		c.Legend = append(c.Legend, legendItem{Reason: r, Class: class[r], Total: totals[r]})
		c.Total += totals[r]
	}
	for i := 0; i <= 4; i++ {
		x := chartW * float64(i) / 4
		ago := span - span*time.Duration(i)/4
		label := "now"
		if ago > 0 {
			label = "−" + fmtDuration(ago)
		}
		c.Ticks = append(c.Ticks, chartTick{X: x, Label: label})
	}
	if c.Max == 0 || span <= 0 {
		c.Empty = true
		return c
	}
	// At least 4 of 720 units wide, so that one bad interval in an hour shows.
	colW := max(chartW*float64(interval)/float64(span), 4)
	for _, p := range points {
		age := now.Sub(p.At)
		x := chartW - chartW*float64(age)/float64(span) - colW
		if x < -colW/2 {
			continue
		}
		y := chartH
		for _, r := range reasons {
			n := p.ByReason[r]
			if n == 0 {
				continue
			}
			h := chartH * float64(n) / float64(c.Max)
			y -= h
			c.Rects = append(c.Rects, chartRect{
				X: round1(max(x, 0)), Y: round1(y), W: round1(colW - 0.5), H: round1(h), Class: class[r],
				Title: fmt.Sprintf("%s: %s samples in the %s up to %s", r, fmtInt(n), fmtDuration(interval), p.At.UTC().Format("15:04:05")),
			})
		}
	}
	return c
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

// ---- tenant page ----

type tenantPageView struct {
	Title        string
	Base         string
	List         MetricList
	Q            string
	Sort, Order  string
	Page, Pages  int
	From, To     int
	Matching     int
	Never        int
	Rows         []metricRowView
	Cols         []sortCol
	Prev, Next   string
	PageLinks    []pageLink
	HasChurn     bool
	HasNever     bool // some metric has series usage: the "never selected" column
	OverviewLink string
	LimitsLink   string
	FormAction   string
	Costly       *CostlyQueries // nil: no Options.Costs
}

type metricRowView struct {
	MetricRow
	Rank   int
	Link   string
	BarPct float64
}

type sortCol struct {
	Key, Label string
	Link       string
	Active     bool
	Arrow      string
	Numeric    bool
}

type pageLink struct {
	N       int
	Link    string
	Current bool
	Gap     bool
}

// sortKeys are the tenant page's sort keys with their natural order.
var sortKeys = []struct {
	key, label, order string
	numeric           bool
}{
	{"name", "Metric", "asc", false},
	{"series", "Series", "desc", true},
	{"churn", "Churn", "desc", true},
	{"queries", "Queries", "desc", true},
	{"last", "Last queried", "desc", true},
	{"never", "Never selected", "desc", true},
}

func defaultOrder(key string) (string, bool) {
	for _, k := range sortKeys {
		if k.key == key {
			return k.order, true
		}
	}
	return "", false
}

func (u *UI) tenantPage(r *http.Request) (int, string, any) {
	t, msg, ok := u.tenantParam(r)
	if !ok {
		return u.errorPage(http.StatusBadRequest, "Bad tenant", msg)
	}
	list, ok := u.o.Metrics.TenantMetrics(t)
	if !ok {
		return u.errorPage(http.StatusNotFound, "Unknown tenant",
			fmt.Sprintf("Tenant %s has no tracked series in the current window.", t))
	}
	q := r.URL.Query()
	v := tenantPageView{
		Title: "Tenant " + t.String(), Base: u.o.Base, List: list,
		Q:            strings.TrimSpace(q.Get("q")),
		Sort:         q.Get("sort"),
		Order:        q.Get("order"),
		OverviewLink: u.link("/"),
		LimitsLink:   u.link("/limits", "tenant", t.String()),
		FormAction:   u.o.Base + "/tenant",
		Costly:       u.costly(t),
	}
	def, known := defaultOrder(v.Sort)
	if !known {
		v.Sort, def = "series", "desc"
	}
	if v.Order != "asc" && v.Order != "desc" {
		v.Order = def
	}
	// The bar is relative to the tenant's largest metric, so that bars on page 5
	// still say how small those metrics are.
	var top int64
	rows := make([]MetricRow, 0, len(list.Rows))
	needle := strings.ToLower(v.Q)
	for _, m := range list.Rows {
		top = max(top, m.Series)
		v.HasChurn = v.HasChurn || m.HasChurn
		v.HasNever = v.HasNever || m.HasSeriesUsage
		if needle != "" && !strings.Contains(strings.ToLower(m.Name), needle) {
			continue
		}
		if m.Queries == 0 {
			v.Never++
		}
		rows = append(rows, m)
	}
	sortMetrics(rows, v.Sort, v.Order == "desc")
	v.Matching = len(rows)
	size := u.o.PageSize
	v.Pages = max((len(rows)+size-1)/size, 1)
	v.Page = min(max(atoiDefault(q.Get("page"), 1), 1), v.Pages)
	lo := (v.Page - 1) * size
	hi := min(lo+size, len(rows))
	v.From, v.To = lo+1, hi
	if lo >= hi {
		v.From = 0
	}
	ts := t.String()
	for i, m := range rows[lo:hi] {
		rv := metricRowView{MetricRow: m, Rank: lo + i + 1}
		if !m.Overflow {
			rv.Link = u.link("/metric", "tenant", ts, "metric", m.Name)
		}
		if top > 0 {
			rv.BarPct = round1(float64(m.Series) / float64(top) * 100)
		}
		v.Rows = append(v.Rows, rv)
	}
	state := func(sortKey, order string, page int) string {
		p := ""
		if page > 1 {
			p = strconv.Itoa(page)
		}
		return u.link("/tenant", "tenant", ts, "q", v.Q, "sort", sortKey, "order", order, "page", p)
	}
	for _, k := range sortKeys {
		if (k.key == "churn" && !v.HasChurn) || (k.key == "never" && !v.HasNever) {
			continue
		}
		c := sortCol{Key: k.key, Label: k.label, Numeric: k.numeric, Active: k.key == v.Sort}
		order := k.order
		if c.Active {
			c.Arrow = map[string]string{"asc": "▲", "desc": "▼"}[v.Order]
			order = map[string]string{"asc": "desc", "desc": "asc"}[v.Order]
		}
		c.Link = state(k.key, order, 1)
		v.Cols = append(v.Cols, c)
	}
	if v.Page > 1 {
		v.Prev = state(v.Sort, v.Order, v.Page-1)
	}
	if v.Page < v.Pages {
		v.Next = state(v.Sort, v.Order, v.Page+1)
	}
	last := 0
	for n := 1; n <= v.Pages; n++ {
		if n != 1 && n != v.Pages && (n < v.Page-2 || n > v.Page+2) {
			continue
		}
		if last != 0 && n > last+1 {
			v.PageLinks = append(v.PageLinks, pageLink{Gap: true})
		}
		v.PageLinks = append(v.PageLinks, pageLink{N: n, Link: state(v.Sort, v.Order, n), Current: n == v.Page})
		last = n
	}
	return http.StatusOK, "tenant", v
}

func sortMetrics(rows []MetricRow, key string, desc bool) {
	slices.SortFunc(rows, func(a, b MetricRow) int {
		var c int
		switch key {
		case "series":
			c = cmp.Compare(a.Series, b.Series)
		case "churn":
			c = cmp.Compare(a.Churn, b.Churn)
		case "queries":
			c = cmp.Compare(a.Queries, b.Queries)
		case "last":
			c = a.LastQueried.Compare(b.LastQueried)
		case "never":
			c = cmp.Compare(a.NeverSelected, b.NeverSelected)
		}
		if desc {
			c = -c
		}
		if c == 0 {
			c = strings.Compare(a.Name, b.Name)
			if desc && key == "name" {
				c = -c
			}
		}
		return c
	})
}

// ---- metric page ----

type metricPageView struct {
	Title        string
	Base         string
	M            MetricDetail
	Labels       []labelView
	Unused       []string
	UnusedValues int64
	SavedPct     float64
	Guarded      int
	Aggregations []aggregationView
	Outputs      int // output series aggregated, listed or not
	Series       *seriesUsageView
	TenantLink   string
	OverviewLink string
	LimitsLink   string
}

type aggregationView struct {
	AggregationRow
	Labels     string // the series without the metric's name
	SourceText string
	OutputHelp string
}

// sourceText and outputHelp say in words what the aggregations API says in IDs.
var (
	sourceText = map[string]string{"relabel": "relabel rules", "label_guard": "label guard"}
	outputHelp = map[string]string{
		"total": "the sum of the inputs' increases, as a counter that never goes down",
		"sum":   "the sum of the inputs' last values in each interval",
		"min":   "the smallest of the inputs' last values in each interval",
		"max":   "the largest of the inputs' last values in each interval",
		"avg":   "the average of the inputs' last values in each interval",
		"count": "the number of inputs with a value in each interval",
		"last":  "the latest of the inputs' values in each interval",
	}
)

type labelView struct {
	LabelRow
	BarPct float64
	Used   bool
}

func (u *UI) metricPage(r *http.Request) (int, string, any) {
	t, msg, ok := u.tenantParam(r)
	if !ok {
		return u.errorPage(http.StatusBadRequest, "Bad tenant", msg)
	}
	name := r.URL.Query().Get("metric")
	if name == "" {
		return u.errorPage(http.StatusBadRequest, "No metric", "The link names no metric.")
	}
	m, ok := u.o.Metrics.Metric(t, name)
	if !ok {
		return u.errorPage(http.StatusNotFound, "Unknown metric",
			fmt.Sprintf("Metric %q is neither tracked nor queried for tenant %s.", clip(name, 128), t))
	}
	v := metricPageView{
		Title: name, Base: u.o.Base, M: m, Series: newSeriesUsageView(m.SeriesUsage),
		TenantLink:   u.link("/tenant", "tenant", t.String()),
		OverviewLink: u.link("/"),
		LimitsLink:   u.link("/limits", "tenant", t.String()),
	}
	labels := slices.Clone(m.Labels)
	slices.SortFunc(labels, func(a, b LabelRow) int {
		if c := cmp.Compare(b.Values, a.Values); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	var top int64
	for _, l := range labels {
		top = max(top, l.Values)
	}
	for _, l := range labels {
		lv := labelView{LabelRow: l, Used: len(l.Uses) > 0}
		if top > 0 {
			lv.BarPct = round1(float64(l.Values) / float64(top) * 100)
		}
		if !lv.Used && l.Name != "__name__" {
			v.Unused = append(v.Unused, l.Name)
			v.UnusedValues += l.Values
		}
		if l.Guard != nil {
			v.Guarded++
		}
		v.Labels = append(v.Labels, lv)
	}
	v.Outputs = len(m.Aggregations) + m.AggregationsMore
	for _, a := range m.Aggregations {
		av := aggregationView{AggregationRow: a, Labels: strings.TrimPrefix(a.Series, name), SourceText: cmp.Or(sourceText[a.Source], a.Source), OutputHelp: outputHelp[a.Output]}
		v.Aggregations = append(v.Aggregations, av)
	}
	if m.Series > 0 {
		v.SavedPct = math.Floor(float64(m.SavedByDroppingUnused)/float64(m.Series)*1000) / 10 // never shows 100% unless it is
	}
	return http.StatusOK, "metric", v
}

// ---- limits page ----

type limitsPageView struct {
	Title   string
	Base    string
	L       LimitsView
	API     string
	Tenants []string
	Fields  []fieldView
}

type fieldView struct {
	LimitField
	ID        string
	Gauge     gauge
	InputMode string
}

func (u *UI) limitsPage(r *http.Request) (int, string, any) {
	v := limitsPageView{Title: "Limits", Base: u.o.Base}
	for _, row := range u.o.Tenants.Tenants() {
		if !row.Overflow {
			v.Tenants = append(v.Tenants, row.Tenant)
		}
	}
	slices.Sort(v.Tenants)
	if r.URL.Query().Get("tenant") == "" {
		return http.StatusOK, "limits", v
	}
	t, msg, ok := u.tenantParam(r)
	if !ok {
		return u.errorPage(http.StatusBadRequest, "Bad tenant", msg)
	}
	if !slices.Contains(v.Tenants, t.String()) {
		v.Tenants = append(v.Tenants, t.String())
		slices.Sort(v.Tenants)
	}
	v.L = u.o.Limits.Limits(t)
	v.Title = "Limits of " + t.String()
	v.API = u.o.LimitsAPI + "/" + t.String()
	for _, f := range v.L.Fields {
		fv := fieldView{LimitField: f, ID: "f-" + strings.ReplaceAll(f.Path, ".", "-")}
		if f.HasUsage {
			fv.Gauge = newGauge(f.Usage, f.Limit, f.UsageUnit)
		}
		switch f.Kind {
		case KindInt:
			fv.InputMode = "numeric"
		case KindFloat:
			fv.InputMode = "decimal"
		}
		v.Fields = append(v.Fields, fv)
	}
	return http.StatusOK, "limits", v
}
