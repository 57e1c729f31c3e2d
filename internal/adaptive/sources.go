package adaptive

import (
	"fmt"
	"strings"

	"github.com/cardguard/cardguard/internal/assets"
	"github.com/cardguard/cardguard/internal/namestats"
	"github.com/cardguard/cardguard/internal/tenant"
)

// AssetBook is what assets.Book tells of the dashboards and rule files.
type AssetBook interface {
	Uses(t tenant.ID) map[string]assets.AssetUse
	Problems(t tenant.ID) int
}

// AssetSource is the evidence of Grafana dashboards, library panels and rule
// files: they read what they show whether or not anyone looks right now.
type AssetSource struct{ b AssetBook }

// NewAssetSource returns the source over b.
func NewAssetSource(b AssetBook) *AssetSource { return &AssetSource{b: b} }

// Name implements Source.
func (s *AssetSource) Name() string { return "assets" }

// Evidence implements Source. A tenant whose assets could not all be read
// gets a status that is not OK: an expression that failed to parse may be
// the one reading a metric.
func (s *AssetSource) Evidence(t tenant.ID) (map[string]MetricEvidence, SourceStatus) {
	uses := s.b.Uses(t)
	out := make(map[string]MetricEvidence, len(uses))
	for name, u := range uses {
		ev := MetricEvidence{Reads: uint64(max(len(u.Refs)+u.RefsOverflow, 1)), LabelsKnown: true, AllLabels: u.AllLabels,
			Labels: make(map[string]LabelEvidence, len(u.Labels))}
		refs := make([]Ref, 0, len(u.Refs))
		for _, r := range u.Refs {
			refs = append(refs, assetRef(r))
		}
		ev.Refs = refs
		for _, r := range refs {
			if ok, why := sumsFirst(r.Query, name); !ok && !u.AllLabels {
				r.Name += ": " + why
				ev.NotSummed = append(ev.NotSummed, r)
			}
		}
		if u.RefsOverflow > 0 && !u.AllLabels {
			// The expressions past the cap were not kept: one of them may
			// count or average the series.
			ev.NotSummed = append(ev.NotSummed, Ref{Kind: "asset", Name: fmt.Sprintf(
				"%d more expressions of the assets read it than are kept per metric: how they combine its series was not checked", u.RefsOverflow)})
		}
		for l, how := range u.Labels {
			le := LabelEvidence{Uses: how.Strings()}
			for _, r := range refs {
				// Who uses the label: the expressions that name it.
				if strings.Contains(r.Query, l) {
					le.Who = append(le.Who, r)
				}
			}
			ev.Labels[l] = le
		}
		out[name] = ev
	}
	st := SourceStatus{OK: true, Detail: "Grafana dashboards, library panels and rule files"}
	if n := s.b.Problems(t); n > 0 {
		st = SourceStatus{OK: false, Detail: fmt.Sprintf("%d of the tenant's assets could not be read (GET /api/cardguard/v1/usage/tenants/%s/assets)", n, t)}
	}
	return out, st
}

func assetRef(r assets.AssetRef) Ref {
	name := r.Title
	switch {
	case r.Rule != "":
		name = strings.TrimPrefix(name+" / "+r.Rule, " / ")
	case r.Panel != "":
		name = strings.TrimPrefix(name+" / "+r.Panel, " / ")
	}
	if name == "" {
		name = r.File
	}
	kind := r.Kind
	if kind == "library_panel" {
		kind = "dashboard"
	}
	return Ref{Kind: kind, Name: name + " (" + r.File + ")", Query: r.Expr}
}

// NameStats is what namestats.Poller tells of VictoriaMetrics'
// metric_names_stats.
type NameStats interface {
	Stats(t tenant.ID) (map[string]namestats.NameStat, namestats.Status)
}

// NameStatsSource is VictoriaMetrics' own count of the reads of each metric
// name: every read, whoever sent it, but not which labels it used.
type NameStatsSource struct{ p NameStats }

// NewNameStatsSource returns the source over p.
func NewNameStatsSource(p NameStats) *NameStatsSource { return &NameStatsSource{p: p} }

// Name implements Source.
func (s *NameStatsSource) Name() string { return nameStatsSource }

// Evidence implements Source.
func (s *NameStatsSource) Evidence(t tenant.ID) (map[string]MetricEvidence, SourceStatus) {
	stats, st := s.p.Stats(t)
	out := make(map[string]MetricEvidence, len(stats))
	for name, ns := range stats {
		if ns.Requests == 0 && ns.LastRequest.IsZero() {
			continue
		}
		out[name] = MetricEvidence{Reads: ns.Requests, Last: ns.LastRequest,
			Refs: []Ref{{Kind: "victoriametrics", Name: "reads VictoriaMetrics counted (any client, labels unknown)", Last: ns.LastRequest}}}
	}
	status := SourceStatus{OK: st.Available, Since: st.CollectedSince, Detail: "VictoriaMetrics' metric_names_stats: every read of the upstream"}
	if !st.Available {
		status.Detail = "VictoriaMetrics' metric_names_stats: " + st.Reason
	}
	return out, status
}
