package queryaudit

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

// summary renders an Extraction as selector key -> "label:uses label:uses [all]",
// with labels sorted, so that table tests can state exactly what is expected.
// The key is the metric name, or for selectors without one "~", the name
// matchers and the required labels in braces: ~__name__=~"a.*"{job}.
func summary(e Extraction) map[string]string {
	out := make(map[string]string, len(e.Selectors))
	for _, s := range e.Selectors {
		key := s.Name
		if key == "" {
			parts := []string{"~"}
			for _, m := range s.NameMatchers {
				parts = append(parts, m.String())
			}
			if len(s.RequiredLabels) > 0 {
				parts = append(parts, "{"+strings.Join(s.RequiredLabels, ",")+"}")
			}
			key = strings.Join(parts, "")
		}
		var fields []string
		for _, l := range slices.Sorted(maps.Keys(s.Labels)) {
			fields = append(fields, l+":"+s.Labels[l].String())
		}
		if s.AllLabels {
			fields = append(fields, "[all]")
		}
		out[key] = strings.Join(fields, " ")
	}
	return out
}

// extractCorpus is real-world PromQL from dashboards, alert rules and recording
// rules, with exactly what each query reads. It also seeds the fuzz test.
var extractCorpus = []struct {
	name  string
	query string
	want  map[string]string
}{
	{
		name:  "histogram quantile over sum by le job",
		query: `histogram_quantile(0.9, sum by (le, job) (rate(http_request_duration_seconds_bucket[5m])))`,
		want:  map[string]string{"http_request_duration_seconds_bucket": "job:grouping le:grouping|function"},
	},
	{
		name:  "bare selector keeps all labels",
		query: `up`,
		want:  map[string]string{"up": "[all]"},
	},
	{
		name:  "rate with matchers keeps all labels",
		query: `rate(node_cpu_seconds_total{mode!="idle", instance=~"web-.*"}[1m])`,
		want:  map[string]string{"node_cpu_seconds_total": "instance:matcher mode:matcher [all]"},
	},
	{
		name:  "count by",
		query: `count by (job) (up == 0)`,
		want:  map[string]string{"up": "job:grouping"},
	},
	{
		name:  "sum without keeps the other labels",
		query: `sum without (instance, pod) (rate(container_cpu_usage_seconds_total[5m]))`,
		want:  map[string]string{"container_cpu_usage_seconds_total": "instance:grouping pod:grouping [all]"},
	},
	{
		name:  "topk returns input series",
		query: `topk(5, sum by (namespace, pod) (container_memory_working_set_bytes{container!=""}))`,
		want:  map[string]string{"container_memory_working_set_bytes": "container:matcher namespace:grouping pod:grouping"},
	},
	{
		name:  "topk over raw series",
		query: `topk by (job) (3, process_resident_memory_bytes)`,
		want:  map[string]string{"process_resident_memory_bytes": "job:grouping [all]"},
	},
	{
		name:  "one to one on",
		query: `sum by (job) (rate(http_requests_total{code=~"5.."}[5m])) / on (job) sum by (job) (rate(http_requests_total[5m]))`,
		want:  map[string]string{"http_requests_total": "code:matcher job:grouping|join"},
	},
	{
		name:  "default matching compares all labels",
		query: `node_filesystem_avail_bytes / node_filesystem_size_bytes < 0.1`,
		want: map[string]string{
			"node_filesystem_avail_bytes": "[all]",
			"node_filesystem_size_bytes":  "[all]",
		},
	},
	{
		name:  "ignoring compares the other labels",
		query: `rate(errors_total[5m]) / ignoring (code) group_left rate(requests_total[5m])`,
		want: map[string]string{
			"errors_total":   "code:join [all]",
			"requests_total": "code:join [all]",
		},
	},
	{
		name:  "group_left copies from the right",
		query: `sum by (namespace, pod) (rate(container_cpu_usage_seconds_total[5m])) * on (namespace, pod) group_left (node) kube_pod_info{job="kube-state-metrics"}`,
		want: map[string]string{
			"container_cpu_usage_seconds_total": "namespace:grouping|join pod:grouping|join",
			"kube_pod_info":                     "job:matcher namespace:join node:join pod:join",
		},
	},
	{
		name:  "group_right copies from the left",
		query: `kube_node_info * on (node) group_right (kernel_version) kube_node_status_capacity{resource="cpu"}`,
		want: map[string]string{
			"kube_node_info":            "kernel_version:join node:join",
			"kube_node_status_capacity": "node:join resource:matcher [all]",
		},
	},
	{
		name:  "info metric join",
		query: `up * on (instance) group_left (version) build_info`,
		want: map[string]string{
			"up":         "instance:join [all]",
			"build_info": "instance:join version:join",
		},
	},
	{
		name:  "and on empty keeps the left",
		query: `up{job="api"} and on () vector(1) > 0`,
		want:  map[string]string{"up": "job:matcher [all]"},
	},
	{
		name:  "unless on",
		query: `kube_pod_status_ready{condition="true"} unless on (pod) kube_pod_deleted`,
		want: map[string]string{
			"kube_pod_status_ready": "condition:matcher pod:join [all]",
			"kube_pod_deleted":      "pod:join",
		},
	},
	{
		name:  "or without on",
		query: `sum by (job) (up) or vector(0)`,
		want:  map[string]string{"up": "job:grouping"},
	},
	{
		name:  "subquery",
		query: `max_over_time(sum by (cluster) (rate(apiserver_request_total[5m]))[1h:1m])`,
		want:  map[string]string{"apiserver_request_total": "cluster:grouping"},
	},
	{
		name:  "label_replace",
		query: `label_replace(up{job="node"}, "host", "$1", "instance", "(.*):.*")`,
		want:  map[string]string{"up": "host:function instance:function job:matcher [all]"},
	},
	{
		name:  "label_join",
		query: `label_join(kube_pod_labels, "id", "/", "namespace", "pod")`,
		want:  map[string]string{"kube_pod_labels": "id:function namespace:function pod:function [all]"},
	},
	{
		name:  "sort_by_label",
		query: `sort_by_label(sum by (instance) (up), "instance")`,
		want:  map[string]string{"up": "instance:grouping|function"},
	},
	{
		name:  "regex name matcher stays a matcher",
		query: `sum by (job) ({__name__=~"node_network_.*_bytes_total", device!="lo"})`,
		want:  map[string]string{`~__name__=~"node_network_.*_bytes_total"`: "device:matcher job:grouping"},
	},
	{
		name:  "name as equality matcher",
		query: `{__name__="up", job="api"}`,
		want:  map[string]string{"up": "job:matcher [all]"},
	},
	{
		name:  "quoted utf8 name",
		query: `{"http.server.duration", "service.name"="api"}`,
		want:  map[string]string{"http.server.duration": "service.name:matcher [all]"},
	},
	{
		name:  "selector without name",
		query: `count({job="api"})`,
		want:  map[string]string{"~{job}": "job:matcher"},
	},
	{
		name:  "offset and at",
		query: `rate(http_requests_total[5m] offset 1w) - rate(http_requests_total[5m] @ end())`,
		want:  map[string]string{"http_requests_total": "[all]"},
	},
	{
		name:  "at timestamp",
		query: `sum(increase(http_requests_total[1h] @ 1700000000))`,
		want:  map[string]string{"http_requests_total": ""},
	},
	{
		name:  "absent",
		query: `absent(up{job="api"})`,
		want:  map[string]string{"up": "job:matcher"},
	},
	{
		name:  "absent_over_time",
		query: `absent_over_time(nginx_up{instance="a"}[10m])`,
		want:  map[string]string{"nginx_up": "instance:matcher"},
	},
	{
		name:  "scalar argument selects too",
		query: `clamp_max(rate(x_total[5m]), scalar(max(limit_value)))`,
		want: map[string]string{
			"x_total":     "[all]",
			"limit_value": "",
		},
	},
	{
		name:  "quantile parameter",
		query: `quantile by (job) (0.95, rate(latency_seconds_sum[5m]))`,
		want:  map[string]string{"latency_seconds_sum": "job:grouping"},
	},
	{
		name:  "count_values",
		query: `count_values("version", build_version)`,
		want:  map[string]string{"build_version": ""},
	},
	{name: "no metrics", query: `1+1`, want: map[string]string{}},
	{name: "vector", query: `vector(1)`, want: map[string]string{}},
	{name: "time", query: `time() - 3600`, want: map[string]string{}},
	{name: "string", query: `"hello"`, want: map[string]string{}},
	{
		name:  "scalar comparison keeps labels",
		query: `(node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes) * 100 < 10`,
		want: map[string]string{
			"node_memory_MemAvailable_bytes": "[all]",
			"node_memory_MemTotal_bytes":     "[all]",
		},
	},
	{
		name:  "apdex style",
		query: `(sum(rate(req_bucket{le="0.3"}[5m])) by (svc) + sum(rate(req_bucket{le="1.2"}[5m])) by (svc)) / 2 / sum(rate(req_count[5m])) by (svc)`,
		want: map[string]string{
			"req_bucket": "le:matcher svc:grouping",
			"req_count":  "svc:grouping",
		},
	},
	{
		name:  "histogram_fraction",
		query: `histogram_fraction(0, 0.2, rate(http_request_duration_seconds_bucket[5m]))`,
		want:  map[string]string{"http_request_duration_seconds_bucket": "le:function [all]"},
	},
	{
		name:  "changes and resets",
		query: `changes(process_start_time_seconds{job="api"}[1h]) > 2`,
		want:  map[string]string{"process_start_time_seconds": "job:matcher [all]"},
	},
	{
		name:  "predict_linear",
		query: `predict_linear(node_filesystem_free_bytes{fstype!~"tmpfs|overlay"}[6h], 4*3600) < 0`,
		want:  map[string]string{"node_filesystem_free_bytes": "fstype:matcher [all]"},
	},
	{
		name:  "name grouping is not a label",
		query: `count by (__name__) ({job="api"})`,
		want:  map[string]string{"~{job}": "job:matcher"},
	},
	{
		name:  "info function",
		query: `info(rate(http_requests_total[5m]), {k8s_cluster_name=~".+"})`,
		want: map[string]string{
			"http_requests_total": "instance:join job:join [all]",
			"target_info":         "instance:join job:join k8s_cluster_name:matcher",
		},
	},
	{
		name:  "limitk experimental aggregation",
		query: `limitk(10, http_requests_total)`,
		want:  map[string]string{"http_requests_total": "[all]"},
	},
}

func TestExtract(t *testing.T) {
	t.Parallel()
	for _, tc := range extractCorpus {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := Extract(tc.query)
			if err != nil {
				t.Fatalf("Extract(%q): %v", tc.query, err)
			}
			if s := summary(got); !maps.Equal(s, tc.want) {
				t.Errorf("Extract(%q)\n got %q\nwant %q", tc.query, s, tc.want)
			}
		})
	}
}

func TestExtractUnparsed(t *testing.T) {
	t.Parallel()
	for _, q := range []string{
		`WITH (x = up`,
		`sum(rate(http_requests_total[5m])) default`,
		`rate(http_requests_total[5m]) keep_metric_names(`,
		`no_such_function(price)`,
		// VictoriaMetrics refuses keep_metric_names after an aggregation too.
		`sum(rate(x[5m])) keep_metric_names`,
		`rate(x[])`,
		`sum(`,
		``,
		`up{job=}`,
	} {
		if _, err := Extract(q); err == nil {
			t.Errorf("Extract(%q): want an error", q)
		}
	}
}

func TestExtractSelectors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		match   []string
		want    map[string]string
		wantErr bool
	}{
		{name: "one metric", match: []string{`up`}, want: map[string]string{"up": ""}},
		{
			name:  "grafana series lookup",
			match: []string{`{__name__="node_load1", instance="a"}`, `node_load5{job=~"n.*"}`},
			want:  map[string]string{"node_load1": "instance:matcher", "node_load5": "job:matcher"},
		},
		{name: "regex", match: []string{`{__name__=~"go_.*"}`}, want: map[string]string{`~__name__=~"go_.*"`: ""}},
		{name: "no name", match: []string{`{job="api"}`}, want: map[string]string{"~{job}": "job:matcher"}},
		{name: "same metric twice merges", match: []string{`up{job="a"}`, `up{instance="b"}`}, want: map[string]string{"up": "instance:matcher job:matcher"}},
		{name: "bad", match: []string{`up{`}, wantErr: true},
		{name: "expression is not a selector", match: []string{`rate(up[5m])`}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ExtractSelectors(tc.match)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("want error, got %q", summary(got))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s := summary(got); !maps.Equal(s, tc.want) {
				t.Errorf("got %q want %q", s, tc.want)
			}
		})
	}
}

func TestExtractionMetrics(t *testing.T) {
	t.Parallel()
	e, err := Extract(`b / on(x) a + {__name__=~"c.*"} * on() group_left b`)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := e.Metrics(), []string{"a", "b"}; !slices.Equal(got, want) {
		t.Errorf("Metrics() = %q, want %q", got, want)
	}
}

func TestClipString(t *testing.T) {
	t.Parallel()
	if got := clipString("héllo", 2); got != "h..." {
		t.Errorf("clipString cut a rune: %q", got)
	}
	if got := clipString("abc", 3); got != "abc" {
		t.Errorf("clipString(abc, 3) = %q", got)
	}
}
