package adaptive

import (
	"strings"
	"testing"
)

func TestSumsFirst(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		query string
		want  bool
	}{
		{`sum by (job) (rate(m[5m]))`, true},
		{`sum(m) by (job)`, true},
		{`histogram_quantile(0.9, sum by (le) (rate(m[5m])))`, true},
		{`sum by (job) (rate(m[5m])) * 100`, true},
		{`sum(rate(m[5m]) * 8)`, true},
		{`sum(2 * increase(m[1h]))`, true},
		{`sum(rate(m[5m]) / 60)`, true},
		{`count(sum by (job) (m))`, true},
		{`sum(rate(m{job="a"}[5m])) / sum(rate(m[5m]))`, true},
		{`other_metric`, true},
		{`count by (job) (m)`, false},
		{`avg by (job) (m)`, false},
		{`max(m)`, false},
		{`sum(max_over_time(m[5m]))`, false},
		{`sum(count_over_time(m[5m]))`, false},
		{`sum(m > 0)`, false},
		{`sum(m + 1)`, false},
		{`sum(1 / m)`, false},
		{`sum(m * on(instance) group_left other)`, false},
		{`sum by (job) (rate(m[5m])) / count by (job) (m)`, false},
		{`sum(rate(m[5m] offset 1h))`, true},
		{`sum(rate({__name__=~"m|n"}[5m]))`, true},
		{`count({__name__=~"m|n"})`, false},
		{`count({__name__=~"n.*"})`, true},
		{`sum(rate(m[5m:1m]))`, true},
		{`WITH (x = m) sum(x)`, false},
		{`sum by ($label) (rate(m{job=~"$job"}[$__rate_interval]))`, true},
		{`sum(rate(m[${__interval}:1m]))`, true},
		{`avg by (job) (rate(m{job="$job"}[$__rate_interval]))`, false},
	} {
		if got, why := sumsFirst(tc.query, "m"); got != tc.want {
			t.Errorf("%s: %v (%s), want %v", tc.query, got, why, tc.want)
		}
	}
	// Counters: only their increases survive aggregation.
	for _, tc := range []struct {
		query string
		want  bool
	}{
		{`sum by (job) (rate(m_total[5m]))`, true},
		{`sum(increase(m_total[1h])) * 2`, true},
		{`histogram_quantile(0.9, sum by (le) (rate(m_bucket[5m])))`, true},
		{`sum(m_total)`, false},
		{`sum by (le) (m_bucket)`, false},
		{`sum(delta(m_total[5m]))`, false},
		{`sum(avg_over_time(m_total[5m]))`, false},
		{`group by (job) (m_total)`, true},
	} {
		metric := "m_total"
		if strings.Contains(tc.query, "m_bucket") {
			metric = "m_bucket"
		}
		if got, why := sumsFirst(tc.query, metric); got != tc.want {
			t.Errorf("%s: %v (%s), want %v", tc.query, got, why, tc.want)
		}
	}
}
