package readpath

import (
	"strings"
	"testing"
)

// TestTable pins the access of every kind of path in every layout, as a table:
// a change to the read table must change this test too.
func TestTable(t *testing.T) {
	t.Parallel()
	const T, A, R = Tenant, Admin, Refused
	tests := []struct {
		path                      string
		cluster, labelled, shared Access
		endpoint                  string
	}{
		{"api/v1/query", T, T, T, "query"},
		{"api/v1/query_range", T, T, T, "query_range"},
		{"api/v1/query_exemplars", T, T, T, "query_exemplars"},
		{"api/v1/series", T, T, T, "series"},
		{"api/v1/labels", T, T, T, "labels"},
		{"api/v1/label/job/values", T, T, T, "label_values"},
		{"api/v1/label/__name__/values", T, T, T, "label_values"},
		{"api/v1/export", T, T, T, "export"},
		{"api/v1/export/csv", T, T, T, "export/csv"},
		{"api/v1/export/native", T, T, T, "export/native"},
		{"federate", T, T, T, "federate"},
		{"api/v1/metadata", T, T, T, "metadata"},
		{"api/v1/status/tsdb", T, T, T, "status/tsdb"},
		{"api/v1/status/buildinfo", T, T, T, "status/buildinfo"},
		{"api/v1/format_query", T, T, T, "format_query"},
		{"api/v1/series/count", T, A, T, "series/count"},
		{"api/v1/status/metric_names_stats", T, A, T, "status/metric_names_stats"},
		{"api/v1/status/top_queries", A, A, A, "admin"},
		{"api/v1/status/active_queries", A, A, A, "admin"},
		{"api/v1/rules", A, A, T, "rules"},
		{"api/v1/targets", A, A, T, "targets"},
		{"internal/resetRollupResultCache", A, A, A, "admin"},
		{"api/v1/admin/status/metric_names_stats/reset", A, A, A, "admin"},
		{"api/v1/admin/tsdb/delete_series", A, A, A, "admin"},
		{"-/reload", A, A, A, "admin"},
		{"metrics/find", R, A, T, "graphite"},
		{"metrics/index.json", R, A, T, "graphite"},
		{"tags/findSeries", R, A, T, "graphite"},
		{"tags/owner", R, A, T, "graphite"},
		{"tags/delSeries", R, A, A, "admin"},
		{"tags/tagSeries", R, R, R, "write"},
		{"tags/tagMultiSeries", R, R, R, "write"},
		{"api/v1/write", R, R, R, "write"},
		{"api/v1/push", R, R, R, "write"},
		{"api/v1/import", R, R, R, "write"},
		{"api/v1/import/prometheus", R, R, R, "write"},
		{"api/v1/import/csv", R, R, R, "write"},
		{"api/v1/import/native", R, R, R, "write"},
		{"api/v1/import/prometheus/metrics/job/x/instance/y", R, R, R, "write"},
		{"api/v1/label/a/b/values", R, R, R, "unknown"},
		{"api/v1/label//values", R, R, R, "unknown"},
		{"api/v1/import/", R, R, R, "unknown"},
		{"api/v1/query/", R, R, R, "unknown"},
		{"opentelemetry/v1/metrics", R, R, R, "unknown"},
		{"influx/write", R, R, R, "unknown"},
		{"vmui", R, R, R, "unknown"},
		{"metrics/find/", R, R, R, "unknown"},
	}
	for _, tt := range tests {
		r := Lookup(tt.path)
		want := [3]Access{tt.cluster, tt.labelled, tt.shared}
		if r.Access != want || r.Endpoint != tt.endpoint {
			t.Errorf("Lookup(%q) = %v %q, want %v %q", tt.path, r.Access, r.Endpoint, want, tt.endpoint)
		}
		for _, a := range r.Access {
			if a != Tenant && r.why(Cluster) == "" && r.Endpoint != "unknown" {
				t.Errorf("%q is refused or admin-only without a message", tt.path)
			}
		}
	}
}

// TestTableIsUnambiguous: patterns are unique, and no pattern shadows another
// (a path an exact pattern names is never matched by an earlier wildcard).
func TestTableIsUnambiguous(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, r := range Routes() {
		if seen[r.Pattern] {
			t.Errorf("pattern %q twice", r.Pattern)
		}
		seen[r.Pattern] = true
		if r.Endpoint == "" || r.Endpoint == "unknown" {
			t.Errorf("%q: endpoint %q", r.Pattern, r.Endpoint)
		}
		if !strings.Contains(r.Pattern, "*") {
			if got := Lookup(r.Pattern); got.Pattern != r.Pattern {
				t.Errorf("%q is served by %q", r.Pattern, got.Pattern)
			}
		}
		// Nothing that writes is reachable, for any role, in any layout.
		if r.Endpoint == "write" && r.Access != refused {
			t.Errorf("write path %q is forwarded: %v", r.Pattern, r.Access)
		}
	}
}

func TestMatch(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		pattern, path string
		want          bool
	}{
		{"a/*/c", "a/b/c", true},
		{"a/*/c", "a//c", false},
		{"a/*/c", "a/b/d/c", false},
		{"a/**", "a/b", true},
		{"a/**", "a/b/c", true},
		{"a/**", "a", false},
		{"a/**", "a/", false},
		{"a/**", "a/b//c", false},
		{"a", "a", true},
		{"a", "a/b", false},
	} {
		if got := match(tt.pattern, tt.path); got != tt.want {
			t.Errorf("match(%q, %q) = %v", tt.pattern, tt.path, got)
		}
	}
}
