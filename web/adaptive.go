package web

import (
	"html/template"
	"net/http"
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
)

// Adaptive is the recommendations engine as the dashboard sees it. Nil in
// Options leaves the recommendations out.
type Adaptive interface {
	// Recommendations returns t's list, recomputed when refresh is set. With
	// segment set, each recommendation is for that segment's series only.
	Recommendations(r *http.Request, t tenant.ID, segment string, refresh bool) AdaptiveList
	// MetricRules returns the rules applied to one metric and the reads they broke.
	MetricRules(t tenant.ID, metric string) AdaptiveMetric
}

// AdaptiveList is a tenant's recommendations and applied rules.
type AdaptiveList struct {
	Computed     time.Time
	SegmentLabel string
	// Segment is the segment value the list is scoped to, if any;
	// SegmentValues are those the recommendations report, to choose from,
	// and Segment.
	Segment        string
	SegmentValues  []string
	Sources        []AdaptiveSource
	Items          []Recommendation
	Withheld       []Withheld
	Applied        []AppliedRule
	SeriesSaveable int64
	// SeriesSaved by the applied rules: measured by their previews where
	// there is one, estimated otherwise.
	SeriesSaved int64
}

// AdaptiveSource is one source of evidence and whether it answered.
type AdaptiveSource struct {
	Name, Detail string
	OK           bool
}

// Recommendation is one proposed rule.
type Recommendation struct {
	Metric, Kind, Labels, Match, RuleText string
	Series, SeriesSaved                   int64
	Method, EstimateDetail                string
	// Formula is the independence formula's saving, for comparison.
	Formula  int64
	Preview  *AdaptivePreview
	Segments []string
	// Segment: the rule acts on the series with SegmentLabel=Segment only.
	Segment  string
	Reason   string
	Evidence []EvidenceRow
	Readers  []string
	Notes    []string
	Checked  []string
}

// AdaptivePreview is a rule measured in dry run.
type AdaptivePreview struct {
	State                  string
	SeriesIn, SeriesOut    int64
	SeriesSaved            int64
	Truncated              bool
	MeasuredFrom, Measured time.Time
	Replica                string
}

// EvidenceRow is one label of a recommended metric.
type EvidenceRow struct {
	Label          string
	DistinctValues int64
	Kept           bool
	Why            string
	Last           time.Time
	Who            []string
}

// Withheld is a metric left alone, and why.
type Withheld struct {
	Metric string
	Series int64
	Reason string
}

// AppliedRule is a rule in force.
type AppliedRule struct {
	Metric, Kind, Labels, Match, RuleText string
	// Segment: the rule acts on the series with SegmentLabel=Segment only;
	// empty: on the whole metric.
	Segment, SegmentLabel string
	AppliedBy             string
	AppliedAt             time.Time
	Forced                bool
	Estimated             int64
	// Measured is the preview's saving when HasMeasured.
	Measured    int64
	HasMeasured bool
	Broken      uint64
}

// AdaptiveMetric is what the metric page shows of the applied rules.
type AdaptiveMetric struct {
	Rules       []AppliedRule
	Broken      uint64
	BrokenReads []BrokenRead
}

// BrokenRead is a read that used what a rule removed.
type BrokenRead struct {
	Query, Reader, Labels, Kind string
	Last                        time.Time
}

type recommendationsView struct {
	Title, Tenant, Base, API, Segment string
	TenantLink, OverviewLink          string
	List                              AdaptiveList
}

// recommendationsPage is GET /fragment/recommendations?tenant=T&segment=&refresh=.
func (u *UI) recommendationsPage(r *http.Request) (int, string, any) {
	if u.o.Adaptive == nil {
		return u.errorPage(http.StatusNotFound, "No recommendations", "This cardguard runs without the recommendations engine.")
	}
	t, msg, ok := u.tenantParam(r)
	if !ok {
		return u.errorPage(http.StatusBadRequest, "Bad tenant", msg)
	}
	q := r.URL.Query()
	seg := clip(q.Get("segment"), 128)
	v := recommendationsView{
		Title: "Recommendations · " + t.String(), Tenant: t.String(), Base: u.o.Base, API: u.o.AdaptiveAPI,
		Segment: seg, TenantLink: u.link("/tenant", "tenant", t.String()), OverviewLink: u.link("/"),
		List: u.o.Adaptive.Recommendations(r, t, seg, q.Get("refresh") == "1"),
	}
	return http.StatusOK, "recommendations", v
}

type adaptiveTenantView struct {
	Link string
	List AdaptiveList
}

// adaptiveTenant is GET /fragment/adaptive-tenant?tenant=T: the savings the
// tenant's applied rules make and those recommended.
func (u *UI) adaptiveTenant(r *http.Request) (int, string, any) {
	t, msg, ok := u.tenantParam(r)
	if !ok || u.o.Adaptive == nil {
		return u.errorPage(http.StatusBadRequest, "Bad tenant", msg)
	}
	return http.StatusOK, "adaptive-tenant", adaptiveTenantView{
		Link: u.link("/recommendations", "tenant", t.String()),
		List: u.o.Adaptive.Recommendations(r, t, "", false),
	}
}

type adaptiveMetricView struct {
	Link string
	M    AdaptiveMetric
}

// adaptiveMetric is GET /fragment/adaptive-metric?tenant=T&metric=M.
func (u *UI) adaptiveMetric(r *http.Request) (int, string, any) {
	t, msg, ok := u.tenantParam(r)
	metric := r.URL.Query().Get("metric")
	if !ok || metric == "" || u.o.Adaptive == nil {
		return u.errorPage(http.StatusBadRequest, "Bad tenant or metric", msg)
	}
	return http.StatusOK, "adaptive-metric", adaptiveMetricView{
		Link: u.link("/recommendations", "tenant", t.String()),
		M:    u.o.Adaptive.MetricRules(t, clip(metric, 256)),
	}
}

// adaptiveFuncs are the template functions of the recommendations: adaptive
// says whether the engine is there, so that the tenant and metric pages hold
// a place for its parts only then.
func (u *UI) adaptiveFuncs() template.FuncMap {
	return template.FuncMap{"adaptive": func() bool { return u.o.Adaptive != nil }}
}

// adaptiveRoutes adds the recommendations page and fragments to m.
func (u *UI) adaptiveRoutes(m *http.ServeMux, frag func(func(*http.Request) (int, string, any)) http.Handler) {
	m.HandleFunc("GET /recommendations", u.serveShell)
	m.Handle("GET /fragment/recommendations", frag(u.recommendationsPage))
	m.Handle("GET /fragment/adaptive-tenant", frag(u.adaptiveTenant))
	m.Handle("GET /fragment/adaptive-metric", frag(u.adaptiveMetric))
}
