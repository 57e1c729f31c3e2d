package readpath

import (
	"strings"

	"github.com/cardguard/cardguard/internal/upstream"
)

// Access says who may reach an upstream path through the read proxy.
type Access uint8

const (
	// Refused paths are never forwarded: writes, paths VictoriaMetrics does not
	// serve there, and anything not in the table.
	Refused Access = iota
	// Tenant paths are forwarded for the tenant's own token: VictoriaMetrics
	// confines them to the tenant (cluster URL, or the extra_label cardguard sets).
	Tenant
	// Admin paths are forwarded for the admin token only: they see or change
	// every tenant, or the whole server.
	Admin
)

func (a Access) String() string {
	switch a {
	case Tenant:
		return "tenant"
	case Admin:
		return "admin"
	}
	return "refused"
}

// Layout is what the table depends on: where the tenant is enforced upstream.
type Layout uint8

const (
	// Cluster: vmselect, the tenant is in the URL; VictoriaMetrics keeps tenants apart.
	Cluster Layout = iota
	// Labelled: a single node with tenant_label; cardguard adds
	// extra_label=<tenant_label>=<tenant>, which only some handlers honour.
	Labelled
	// Shared: a single node without tenant_label; every tenant sees the same data,
	// so whatever is read-only is as safe for one tenant as for another.
	Shared
)

// LayoutOf returns the layout of s.
func LayoutOf(s *upstream.Scheme) Layout {
	switch {
	case s.Mode() == upstream.ModeCluster:
		return Cluster
	case s.Isolated():
		return Labelled
	}
	return Shared
}

func (l Layout) String() string {
	return [...]string{"cluster", "single with tenant_label", "single"}[l]
}

// Route is one row of the table.
type Route struct {
	// Pattern is the path below the tenant's Prometheus root
	// (/select/<tenant>/prometheus/ or the single-tenant /): "api/v1/query". A "*"
	// segment matches one segment; a trailing "**" matches one or more.
	Pattern string
	// Access per layout, indexed by Layout.
	Access [3]Access
	// Endpoint names the route in cardguard's own metrics: a fixed set, so traffic
	// cannot create label values.
	Endpoint string
	// Usage marks reads that select series and so count as query usage.
	Usage bool
	// Why is the message for a refusal or for a tenant token on an admin path.
	Why string
}

const (
	whyWrite = "writes are not accepted on the read path: send remote write to /insert/<tenant>/prometheus/api/v1/write " +
		"(or /api/v1/write for the default tenant); other ingestion formats are not supported by this proxy yet"
	whyIgnoresTenant = "this VictoriaMetrics handler ignores the tenant filter (extra_label) and would show every tenant's data; it needs the admin token"
	whyGlobal        = "this endpoint shows or changes the whole VictoriaMetrics server, not one tenant; it needs the admin token"
	whyGraphiteVM    = "vmselect serves Graphite under /select/<tenant>/graphite/, which cardguard does not proxy"
)

var (
	all      = [3]Access{Tenant, Tenant, Tenant}
	admin    = [3]Access{Admin, Admin, Admin}
	refused  = [3]Access{Refused, Refused, Refused}
	perURL   = [3]Access{Tenant, Admin, Tenant}  // honours the tenant in a cluster URL, not extra_label
	notInURL = [3]Access{Admin, Admin, Tenant}   // global even in a cluster (vmalert proxy, scrape config)
	graphite = [3]Access{Refused, Admin, Tenant} // single node only, ignores extra_label
	gDelete  = [3]Access{Refused, Admin, Admin}  // Graphite tag deletion
)

// routes is every upstream path the read proxy knows. Access was decided by what
// VictoriaMetrics v1.150.0 answers with extra_label set (single node) and with a
// tenant in the URL (cluster), checked against the real binaries in
// cmd/cardguard's TestAttackMatrix; a path that is not here is refused.
var routes = []Route{
	// The Prometheus query API: every handler applies extra_label / extra_filters.
	{Pattern: "api/v1/query", Access: all, Endpoint: "query", Usage: true},
	{Pattern: "api/v1/query_range", Access: all, Endpoint: "query_range", Usage: true},
	{Pattern: "api/v1/query_exemplars", Access: all, Endpoint: "query_exemplars", Usage: true},
	{Pattern: "api/v1/series", Access: all, Endpoint: "series", Usage: true},
	{Pattern: "api/v1/labels", Access: all, Endpoint: "labels", Usage: true},
	{Pattern: "api/v1/label/*/values", Access: all, Endpoint: "label_values", Usage: true},
	{Pattern: "api/v1/export", Access: all, Endpoint: "export", Usage: true},
	{Pattern: "api/v1/export/csv", Access: all, Endpoint: "export/csv", Usage: true},
	{Pattern: "api/v1/export/native", Access: all, Endpoint: "export/native", Usage: true},
	{Pattern: "federate", Access: all, Endpoint: "federate", Usage: true},
	{Pattern: "api/v1/metadata", Access: all, Endpoint: "metadata"},
	{Pattern: "api/v1/status/tsdb", Access: all, Endpoint: "status/tsdb"},
	// Static or data-free answers.
	{Pattern: "api/v1/status/buildinfo", Access: all, Endpoint: "status/buildinfo"},
	{Pattern: "api/v1/format_query", Access: all, Endpoint: "format_query"},
	{Pattern: "api/v1/parse_query", Access: all, Endpoint: "parse_query"},
	{Pattern: "prettify-query", Access: all, Endpoint: "prettify_query"},

	// Per tenant in a cluster URL; global on a single node.
	{Pattern: "api/v1/series/count", Access: perURL, Endpoint: "series/count", Why: whyIgnoresTenant},
	{Pattern: "api/v1/status/metric_names_stats", Access: perURL, Endpoint: "status/metric_names_stats", Why: whyIgnoresTenant},

	// Whole server: other tenants' query text, rules, scrape targets, config.
	{Pattern: "api/v1/status/top_queries", Access: admin, Endpoint: "admin", Why: whyGlobal},
	{Pattern: "api/v1/status/active_queries", Access: admin, Endpoint: "admin", Why: whyGlobal},
	{Pattern: "api/v1/status/config", Access: admin, Endpoint: "admin", Why: whyGlobal},
	{Pattern: "api/v1/rules", Access: notInURL, Endpoint: "rules", Why: whyGlobal},
	{Pattern: "api/v1/alerts", Access: notInURL, Endpoint: "alerts", Why: whyGlobal},
	{Pattern: "api/v1/notifiers", Access: notInURL, Endpoint: "notifiers", Why: whyGlobal},
	{Pattern: "api/v1/targets", Access: notInURL, Endpoint: "targets", Why: whyGlobal},
	{Pattern: "internal/resetRollupResultCache", Access: admin, Endpoint: "admin", Why: whyGlobal},
	{Pattern: "internal/force_flush", Access: admin, Endpoint: "admin", Why: whyGlobal},
	{Pattern: "internal/force_merge", Access: admin, Endpoint: "admin", Why: whyGlobal},
	{Pattern: "api/v1/admin/tsdb/delete_series", Access: admin, Endpoint: "admin", Why: whyGlobal},
	{Pattern: "api/v1/admin/tsdb/snapshot", Access: admin, Endpoint: "admin", Why: whyGlobal},
	{Pattern: "api/v1/admin/status/metric_names_stats/reset", Access: admin, Endpoint: "admin", Why: whyGlobal},
	{Pattern: "-/reload", Access: admin, Endpoint: "admin", Why: whyGlobal},

	// Graphite on a single node (it strips /prometheus/); none honours extra_label.
	{Pattern: "metrics/find", Access: graphite, Endpoint: "graphite", Why: whyIgnoresTenant},
	{Pattern: "metrics/expand", Access: graphite, Endpoint: "graphite", Why: whyIgnoresTenant},
	{Pattern: "metrics/index.json", Access: graphite, Endpoint: "graphite", Why: whyIgnoresTenant},
	{Pattern: "render", Access: graphite, Endpoint: "graphite", Why: whyIgnoresTenant},
	{Pattern: "tags", Access: graphite, Endpoint: "graphite", Why: whyIgnoresTenant},
	{Pattern: "tags/findSeries", Access: graphite, Endpoint: "graphite", Why: whyIgnoresTenant},
	{Pattern: "tags/autoComplete/tags", Access: graphite, Endpoint: "graphite", Why: whyIgnoresTenant},
	{Pattern: "tags/autoComplete/values", Access: graphite, Endpoint: "graphite", Why: whyIgnoresTenant},
	{Pattern: "tags/*", Access: graphite, Endpoint: "graphite", Why: whyIgnoresTenant},
	{Pattern: "tags/delSeries", Access: gDelete, Endpoint: "admin", Why: whyGlobal},

	// Writes: never through the read path, whatever the token.
	{Pattern: "api/v1/write", Access: refused, Endpoint: "write", Why: whyWrite},
	{Pattern: "api/v1/push", Access: refused, Endpoint: "write", Why: whyWrite},
	{Pattern: "api/v1/import", Access: refused, Endpoint: "write", Why: whyWrite},
	{Pattern: "api/v1/import/**", Access: refused, Endpoint: "write", Why: whyWrite},
	{Pattern: "tags/tagSeries", Access: refused, Endpoint: "write", Why: whyWrite},
	{Pattern: "tags/tagMultiSeries", Access: refused, Endpoint: "write", Why: whyWrite},
}

// unknown is the route of every path not in the table.
var unknown = Route{Access: refused, Endpoint: "unknown"}

// graphiteCluster overrides the refusal message of Graphite paths in a cluster.
func (r Route) why(l Layout) string {
	if r.Endpoint == "graphite" && l == Cluster {
		return whyGraphiteVM
	}
	return r.Why
}

// Routes returns a copy of the table, for documentation and tests.
func Routes() []Route { return append([]Route(nil), routes...) }

// Lookup returns the route of path (below the tenant's Prometheus root, cleaned by
// CleanAPIPath). An exact pattern wins over a "*" one ("tags/findSeries" over
// "tags/*"); a path no pattern matches gets a refused route.
func Lookup(path string) Route {
	var wild *Route
	for i := range routes {
		r := &routes[i]
		if r.Pattern == path {
			return *r
		}
		if wild == nil && strings.Contains(r.Pattern, "*") && match(r.Pattern, path) {
			wild = r
		}
	}
	if wild != nil {
		return *wild
	}
	return unknown
}

// match reports whether path matches pattern segment by segment.
func match(pattern, path string) bool {
	ps, xs := strings.Split(pattern, "/"), strings.Split(path, "/")
	for i, p := range ps {
		if p == "**" {
			return i == len(ps)-1 && len(xs) > i && !slicesHasEmpty(xs[i:])
		}
		if i >= len(xs) || xs[i] == "" || (p != "*" && p != xs[i]) {
			return false
		}
	}
	return len(ps) == len(xs)
}

func slicesHasEmpty(s []string) bool {
	for _, v := range s {
		if v == "" {
			return true
		}
	}
	return false
}
