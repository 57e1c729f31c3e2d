package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"gopkg.in/yaml.v3"

	"github.com/cardguard/cardguard/internal/adaptive"
	"github.com/cardguard/cardguard/internal/vmtest"
)

// nodeAppWorkload is what a node exporter on 5 hosts and an API of 100 pods
// write, every second at real time:
//
//   - node_cpu_seconds_total{instance (5), cpu (4), mode (idle, system, user)}:
//     60 counters; each CPU spends 0.7 s/s idle, 0.1 system, 0.2 user.
//   - node_memory_MemAvailable_bytes{instance}: 5 gauges, read whole.
//   - node_filesystem_avail_bytes{instance, device, mountpoint, fstype}: 20
//     gauges; each device has one mountpoint, so device follows mountpoint.
//   - node_boot_time_seconds{instance}: 5 gauges only vmalert reads, from
//     VictoriaMetrics directly.
//   - node_network_receive_bytes_total{instance, device (eth0, lo)}: 10
//     counters nothing reads.
//   - http_request_duration_seconds_bucket/_sum/_count{route (2), pod (10),
//     instance, user_id (10)}, le (5) on the buckets: 1000 + 200 + 200 series,
//     each pod on its own instance.
//   - http_requests_total{pod (100), instance, user_id (10)}: 1000 counters,
//     each pod on its own instance; the dashboard reads them by instance and
//     user_id, so pod, the one unused label, saves nothing.
//
// Counters rise at a constant rate from start, so rate() answers the same at
// any time and the truth of increase() over a window is known.
type nodeAppWorkload struct{ start time.Time }

var (
	nodeModes = []struct {
		mode string
		rate float64
	}{{"idle", 0.7}, {"system", 0.1}, {"user", 0.2}}
	apiRoutes   = []string{"/api/orders", "/api/users"}
	bucketLes   = []string{"0.1", "0.25", "0.5", "1", "+Inf"}
	bucketShare = []float64{0.5, 0.7, 0.9, 0.995, 1} // cumulative: p99 falls in (0.5, 1]
	filesystems = []struct{ device, mountpoint, fstype string }{
		{"sda1", "/", "ext4"}, {"sda2", "/boot", "ext4"}, {"sdb1", "/data", "xfs"}, {"tmpfs", "/run", "tmpfs"},
	}
)

// apiRate is the requests per second of one pod, user and route.
func apiRate(route, pod, user int) float64 { return float64(1 + (pod+user+route)%3) }

func (w nodeAppWorkload) request(at time.Time) *prompb.WriteRequest {
	wr := &prompb.WriteRequest{}
	secs := at.Sub(w.start).Seconds()
	ts := at.UnixMilli()
	add := func(v float64, kv ...string) {
		ls := make([]prompb.Label, 0, len(kv)/2)
		for i := 0; i < len(kv); i += 2 {
			ls = append(ls, prompb.Label{Name: kv[i], Value: kv[i+1]})
		}
		wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{Labels: ls, Samples: []prompb.Sample{{Value: v, Timestamp: ts}}})
	}
	for i := range 5 {
		inst := fmt.Sprintf("node-%d:9100", i)
		for c := range 4 {
			for _, m := range nodeModes {
				add(m.rate*secs, "__name__", "node_cpu_seconds_total", "cpu", strconv.Itoa(c), "instance", inst, "mode", m.mode)
			}
		}
		add(float64(8+i)*(1<<30), "__name__", "node_memory_MemAvailable_bytes", "instance", inst)
		for f, fs := range filesystems {
			add(float64(10*(i+1)+f)*(1<<30), "__name__", "node_filesystem_avail_bytes", "device", fs.device, "fstype", fs.fstype, "instance", inst, "mountpoint", fs.mountpoint)
		}
		add(float64(w.start.Unix()-int64(3600*(i+1))), "__name__", "node_boot_time_seconds", "instance", inst)
		add(1000*secs, "__name__", "node_network_receive_bytes_total", "device", "eth0", "instance", inst)
		add(10*secs, "__name__", "node_network_receive_bytes_total", "device", "lo", "instance", inst)
	}
	for r, route := range apiRoutes {
		for p := range 10 {
			inst, pod := fmt.Sprintf("10.0.0.%d:8080", p), fmt.Sprintf("api-%d", p)
			for u := range 10 {
				user := fmt.Sprintf("u%d", u)
				n := apiRate(r, p, u) * secs
				for b, le := range bucketLes {
					add(n*bucketShare[b], "__name__", "http_request_duration_seconds_bucket", "instance", inst, "le", le, "pod", pod, "route", route, "user_id", user)
				}
				add(0.3*n, "__name__", "http_request_duration_seconds_sum", "instance", inst, "pod", pod, "route", route, "user_id", user)
				add(n, "__name__", "http_request_duration_seconds_count", "instance", inst, "pod", pod, "route", route, "user_id", user)
			}
		}
	}
	for p := range 100 {
		for u := range 10 {
			add(float64(1+(p+u)%4)*secs, "__name__", "http_requests_total", "instance", fmt.Sprintf("10.1.%d.1:8080", p), "pod", fmt.Sprintf("web-%d", p), "user_id", fmt.Sprintf("u%d", u))
		}
	}
	return wr
}

// workloadDashboard is a Grafana dashboard as exported: a datasource and a
// query variable, a collapsed row holding the node panels, and the API panels
// at the top level.
const workloadDashboard = `{
  "uid": "nodes-api",
  "title": "Nodes and API",
  "schemaVersion": 39,
  "time": {"from": "now-6h", "to": "now"},
  "templating": {
    "list": [
      {"name": "datasource", "type": "datasource", "query": "prometheus", "current": {"text": "VictoriaMetrics", "value": "vm"}},
      {
        "name": "instance", "type": "query", "label": "Instance",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "definition": "label_values(node_cpu_seconds_total, instance)",
        "query": {"query": "label_values(node_cpu_seconds_total, instance)", "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "multi": true, "includeAll": true, "refresh": 2,
        "current": {"text": ["All"], "value": ["$__all"]}
      }
    ]
  },
  "panels": [
    {
      "type": "row", "title": "Nodes", "id": 1, "collapsed": true,
      "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0},
      "panels": [
        {
          "type": "timeseries", "title": "CPU busy", "id": 2,
          "datasource": {"type": "prometheus", "uid": "${datasource}"},
          "gridPos": {"h": 8, "w": 12, "x": 0, "y": 1},
          "fieldConfig": {"defaults": {"unit": "short"}},
          "targets": [{"refId": "A", "expr": "sum by (instance) (rate(node_cpu_seconds_total{mode!=\"idle\", instance=~\"$instance\"}[$__rate_interval]))", "legendFormat": "{{instance}}"}]
        },
        {
          "type": "timeseries", "title": "Memory available", "id": 3,
          "datasource": {"type": "prometheus", "uid": "${datasource}"},
          "gridPos": {"h": 8, "w": 12, "x": 12, "y": 1},
          "fieldConfig": {"defaults": {"unit": "bytes"}},
          "targets": [{"refId": "A", "expr": "node_memory_MemAvailable_bytes{instance=~\"$instance\"}", "legendFormat": "{{instance}}"}]
        },
        {
          "type": "bargauge", "title": "Filesystem free", "id": 4,
          "datasource": {"type": "prometheus", "uid": "${datasource}"},
          "gridPos": {"h": 8, "w": 24, "x": 0, "y": 9},
          "targets": [{"refId": "A", "expr": "sum by (instance, mountpoint) (node_filesystem_avail_bytes{fstype!=\"tmpfs\", instance=~\"$instance\"})", "instant": true, "legendFormat": "{{instance}} {{mountpoint}}"}]
        }
      ]
    },
    {"type": "row", "title": "API", "id": 10, "collapsed": false, "gridPos": {"h": 1, "w": 24, "x": 0, "y": 1}, "panels": []},
    {
      "type": "timeseries", "title": "p99 latency", "id": 11,
      "datasource": {"type": "prometheus", "uid": "${datasource}"},
      "gridPos": {"h": 8, "w": 12, "x": 0, "y": 2},
      "targets": [{"refId": "A", "expr": "histogram_quantile(0.99, sum by (route, le) (rate(http_request_duration_seconds_bucket[$__rate_interval])))", "legendFormat": "{{route}}"}]
    },
    {
      "type": "heatmap", "title": "Latency distribution", "id": 12,
      "datasource": {"type": "prometheus", "uid": "${datasource}"},
      "gridPos": {"h": 8, "w": 12, "x": 12, "y": 2},
      "targets": [{"refId": "A", "expr": "sum by (route, le) (rate(http_request_duration_seconds_bucket[$__rate_interval]))", "format": "heatmap", "legendFormat": "{{le}}"}]
    },
    {
      "type": "timeseries", "title": "Mean latency", "id": 13,
      "datasource": {"type": "prometheus", "uid": "${datasource}"},
      "gridPos": {"h": 8, "w": 12, "x": 0, "y": 10},
      "targets": [{"refId": "A", "expr": "sum by (route) (rate(http_request_duration_seconds_sum[$__rate_interval])) / sum by (route) (rate(http_request_duration_seconds_count[$__rate_interval]))"}]
    },
    {
      "type": "table", "title": "Requests by instance and user", "id": 14,
      "datasource": {"type": "prometheus", "uid": "${datasource}"},
      "gridPos": {"h": 8, "w": 12, "x": 12, "y": 10},
      "targets": [{"refId": "A", "expr": "sum by (instance, user_id) (rate(http_requests_total[$__rate_interval]))", "instant": true, "format": "table"}]
    }
  ]
}
`

// workloadRules is a Prometheus rule file, read by cardguard as an asset.
const workloadRules = `groups:
  - name: node
    interval: 30s
    rules:
      - record: instance:node_cpu_busy:rate5m
        expr: sum by (instance) (rate(node_cpu_seconds_total{mode!="idle"}[5m]))
      - alert: NodeCPUBusy
        expr: sum by (instance) (rate(node_cpu_seconds_total{mode!="idle"}[5m])) > 1
        for: 10m
        labels:
          severity: warning
        annotations:
          summary: "{{ $labels.instance }} has more than one CPU busy"
  - name: api
    rules:
      - record: route:http_request_duration_seconds:p99_5m
        expr: histogram_quantile(0.99, sum by (route, le) (rate(http_request_duration_seconds_bucket[5m])))
      - record: route:http_request_duration_seconds:mean5m
        expr: sum by (route) (rate(http_request_duration_seconds_sum[5m])) / sum by (route) (rate(http_request_duration_seconds_count[5m]))
      - alert: APIHighLatency
        expr: histogram_quantile(0.99, sum by (route, le) (rate(http_request_duration_seconds_bucket[5m]))) > 0.5
        for: 5m
        labels:
          severity: page
        annotations:
          summary: "p99 latency of {{ $labels.route }} above 500ms"
`

// vmalertRules are evaluated by a vmalert pointed at VictoriaMetrics, not at
// cardguard, and are not among the assets: the one reader of
// node_boot_time_seconds is invisible to cardguard but to VictoriaMetrics'
// metric name stats.
const vmalertRules = `groups:
  - name: reboots
    rules:
      - alert: NodeRebooted
        expr: time() - node_boot_time_seconds < 600
        labels:
          severity: info
`

// assetQuery is one expression of the dashboard or the rule file, as it is
// replayed: variables substituted, and ranges of 20 s, so that a window lies
// wholly before or wholly after the rules are applied (a 5m window would
// straddle the apply for five minutes, summing raw and aggregated series).
type assetQuery struct {
	from   string // the panel, variable or rule
	expr   string // as written
	query  string // as replayed
	values string // for a label_values variable: the label
	match  string // and the selector
}

var (
	assetRange       = regexp.MustCompile(`\[(\$__rate_interval|\$__interval|\d+[smhd])\]`)
	assetLabelValues = regexp.MustCompile(`^label_values\(\s*([^,]+?)\s*,\s*(\w+)\s*\)$`)
)

func replayable(from, expr string) assetQuery {
	q := assetQuery{from: from, expr: expr}
	if m := assetLabelValues.FindStringSubmatch(expr); m != nil {
		q.match, q.values = m[1], m[2]
		return q
	}
	s := assetRange.ReplaceAllString(expr, "[20s]")
	// What Grafana sends for an "All" multi-value variable.
	s = strings.ReplaceAll(s, `"$instance"`, `".*"`)
	q.query = s
	return q
}

// assetQueries extracts every expression of the dashboard (panels at any
// depth, query variables) and of the rule file.
func assetQueries(t *testing.T, dashboard, rules string) []assetQuery {
	t.Helper()
	var d struct {
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal([]byte(dashboard), &d); err != nil {
		t.Fatal(err)
	}
	var out []assetQuery
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatal(err)
		}
		out = append(out, replayable("variable $"+v.Name, q.Query))
	}
	type panel struct {
		Title   string            `json:"title"`
		Panels  []json.RawMessage `json:"panels"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	}
	var walk func([]json.RawMessage)
	walk = func(raws []json.RawMessage) {
		for _, raw := range raws {
			var p panel
			if err := json.Unmarshal(raw, &p); err != nil {
				t.Fatal(err)
			}
			for _, tg := range p.Targets {
				out = append(out, replayable("panel "+p.Title, tg.Expr))
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	var rf struct {
		Groups []struct {
			Rules []struct {
				Record string `yaml:"record"`
				Alert  string `yaml:"alert"`
				Expr   string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal([]byte(rules), &rf); err != nil {
		t.Fatal(err)
	}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			out = append(out, replayable("rule "+r.Record+r.Alert, r.Expr))
		}
	}
	return out
}

// labelValues asks what Grafana asks for label_values(match, label), over the
// last 20 s before ts.
func labelValues(t *testing.T, base, match, label string, ts time.Time) map[string]float64 {
	t.Helper()
	q := url.Values{"match[]": {match}, "start": {strconv.FormatInt(ts.Add(-20*time.Second).Unix(), 10)}, "end": {strconv.FormatInt(ts.Unix(), 10)}}
	code, body := get(t, base+"/api/v1/label/"+label+"/values?"+q.Encode())
	var resp struct {
		Data []string `json:"data"`
	}
	if err := json.Unmarshal(body, &resp); code != 200 || err != nil {
		t.Fatalf("label_values(%s, %s): %d %v: %s", match, label, code, err, body)
	}
	out := map[string]float64{}
	for _, v := range resp.Data {
		out[label+"="+v] = 1
	}
	return out
}

func (q assetQuery) run(t *testing.T, base string, ts time.Time) map[string]float64 {
	t.Helper()
	if q.values != "" {
		return labelValues(t, base, q.match, q.values, ts)
	}
	return vector(t, base, q.query, ts)
}

// nameReads is VictoriaMetrics' own count of the reads of metric.
func nameReads(t *testing.T, vm, metric string) uint64 {
	t.Helper()
	_, body := get(t, vm+"/api/v1/status/metric_names_stats?"+url.Values{"match_pattern": {metric}}.Encode())
	var resp struct {
		Records []struct {
			MetricName string `json:"metricName"`
			Requests   uint64 `json:"queryRequestsCount"`
		} `json:"records"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatalf("metric_names_stats: %v: %s", err, body)
	}
	for _, r := range resp.Records {
		if r.MetricName == metric {
			return r.Requests
		}
	}
	return 0
}

// TestAdaptiveWorkload: a node exporter's and an API's series; a Grafana
// dashboard and a rule file in usage.assets_dir say which labels are read; a
// vmalert reads one more metric from VictoriaMetrics directly. Every
// recommendation is previewed and applied: the series stored fall by what the
// previews measured, every query of the dashboard and of the rule file answers
// as before, the estimates match the previews, the metric only vmalert reads
// is left alone, and pod, which follows instance, is not claimed to save
// anything.
func TestAdaptiveWorkload(t *testing.T) {
	assetsDir := t.TempDir()
	for name, body := range map[string]string{"nodes-api.json": workloadDashboard, "rules.yml": workloadRules} {
		if err := os.WriteFile(filepath.Join(assetsDir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e := newEnv(t, func(c *Config) {
		c.Cardinality.Window = 4 * time.Second
		c.Cardinality.Buckets = 2
		c.Aggregation.Interval = time.Second
		c.Usage.AssetsDir = assetsDir
		c.Usage.AssetsPollInterval = time.Second
		c.Usage.MetricNamesStats.Interval = time.Second
	})
	alert := vmtest.StartVMAlert(t, e.vm.URL, vmalertRules)
	w := nodeAppWorkload{start: time.Now()}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	// Samples are stamped on a schedule, every second at half past, as a
	// scraper stamps them, whenever the push gets through on a loaded
	// machine. The aggregator writes its outputs at the whole seconds: each
	// output sample then holds the inputs of half a second before it, so a
	// rate() of the aggregated series is as exact as one of its inputs.
	// Stamped with the push's own time, a push delayed across a whole second
	// shifts an output sample's input time by up to the aggregation interval,
	// and a rate over 20 s by up to 5% (see the aggregate package: outputs
	// carry the flush time).
	wg.Go(func() {
		next := time.Now().Truncate(time.Second).Add(1500 * time.Millisecond)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(next)):
			}
			if code, body := e.push("/api/v1/write", w.request(next)); code != http.StatusNoContent {
				t.Errorf("push: %d %s", code, body)
				return
			}
			for next = next.Add(time.Second); time.Until(next) < 0; next = next.Add(time.Second) {
			}
		}
	})
	defer wg.Wait()
	defer stop()

	tn := e.app.cfg.DefaultTenant.String()
	var src sourcesStatus
	waitFor(t, 10*time.Second, "both assets read", func() bool {
		apiJSON(t, "GET", e.srv.URL+"/api/cardguard/v1/usage/tenants/"+tn+"/sources", &src)
		return src.Assets.Files == 2
	})
	if src.Assets.Problems != 0 {
		t.Fatalf("assets: %+v: every expression should parse", src.Assets)
	}
	// vmalert reads node_boot_time_seconds from VictoriaMetrics, which counts it.
	for deadline := time.Now().Add(20 * time.Second); nameReads(t, e.vm.URL, "node_boot_time_seconds") == 0; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("VictoriaMetrics counted no read of node_boot_time_seconds in 20 s; vmalert's log:\n%s", alert.Log())
		}
	}

	base := e.srv.URL + "/api/cardguard/v1/recommendations/tenants/" + tn
	const bucket = "http_request_duration_seconds_bucket"
	want := map[string]string{
		"node_network_receive_bytes_total":    "drop",
		"node_cpu_seconds_total":              "aggregate cpu",
		bucket:                                "aggregate instance,pod,user_id",
		"http_request_duration_seconds_sum":   "aggregate instance,pod,user_id",
		"http_request_duration_seconds_count": "aggregate instance,pod,user_id",
	}
	var (
		list adaptive.List
		recs map[string]adaptive.Recommendation
		held map[string]adaptive.Withheld
	)
	got := func(r adaptive.Recommendation) string {
		return strings.TrimSpace(r.Kind + " " + strings.Join(r.Labels, ",") + r.Match)
	}
	// Until the sketches hold a whole window, the name stats were polled
	// after vmalert's reads and the upstream has answered the estimates; then
	// what the list says is asserted, whether or not it came to be.
	ready := func() bool {
		e.app.tracker.Refresh()
		list = adaptive.List{}
		if code := apiJSON(t, "GET", base+"/?refresh=1", &list); code != 200 {
			t.Fatalf("list: %d", code)
		}
		recs, held = map[string]adaptive.Recommendation{}, map[string]adaptive.Withheld{}
		for _, r := range list.Items {
			recs[r.Metric] = r
		}
		for _, wh := range list.Withheld {
			held[wh.Metric] = wh
		}
		for m, k := range want {
			if got(recs[m]) != k {
				return false
			}
		}
		_, boot := held["node_boot_time_seconds"]
		_, pod := held["http_requests_total"]
		return boot && pod
	}
	for deadline := time.Now().Add(30 * time.Second); !ready() && time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
	}
	for _, r := range list.Items {
		t.Logf("recommend %-36s %-9s %-24s saves %4d (%s; formula %d)", r.Metric, r.Kind, strings.Join(r.Labels, ","), r.SeriesSaved, r.Estimate.Method, r.Estimate.Formula)
	}
	for _, wh := range list.Withheld {
		t.Logf("withheld  %-36s %s", wh.Metric, wh.Reason)
	}
	for m, k := range want {
		if r := recs[m]; got(r) != k {
			t.Errorf("%s: recommended %q, want %q", m, got(r), k)
		}
	}
	if len(recs) != len(want) {
		var all []string
		for m, r := range recs {
			all = append(all, m+" "+got(r))
		}
		t.Errorf("%d recommendations, want %d: %v", len(recs), len(want), all)
	}
	// Only vmalert reads node_boot_time_seconds, with labels nobody here
	// knows: neither dropped nor aggregated.
	if r, ok := recs["node_boot_time_seconds"]; ok {
		t.Errorf("node_boot_time_seconds, read by a vmalert querying VictoriaMetrics directly, is recommended: %s", got(r))
	}
	if wh, ok := held["node_boot_time_seconds"]; !ok || !strings.Contains(wh.Reason, "metric_names_stats") {
		t.Errorf("node_boot_time_seconds withheld for %q, want the reads VictoriaMetrics counted", wh.Reason)
	}
	if _, ok := recs["node_memory_MemAvailable_bytes"]; ok {
		t.Error("node_memory_MemAvailable_bytes is read whole by the dashboard, yet recommended")
	}
	// pod follows instance: no saving claimed where the independence formula
	// sees 900; device follows mountpoint likewise.
	pod := held["http_requests_total"]
	if pod.Estimate == nil || pod.Estimate.Method != adaptive.MethodUpstream || pod.Estimate.Saved != 0 || pod.Estimate.Formula < 800 ||
		!slices.Equal(pod.Labels, []string{"pod"}) {
		t.Errorf("http_requests_total: want pod withheld with an upstream estimate of 0 saved where the formula says about 900: %+v", pod)
	}
	if fs := held["node_filesystem_avail_bytes"]; fs.Estimate == nil || fs.Estimate.Saved != 0 || !slices.Equal(fs.Labels, []string{"device"}) {
		t.Errorf("node_filesystem_avail_bytes: want device withheld with 0 saved: %+v", fs)
	}

	if t.Failed() {
		t.FailNow() // what follows applies the recommendations
	}

	// Preview every recommendation, and the pod rule, side by side.
	previewOf := map[string]string{}
	for m, r := range recs {
		if code := apiJSON(t, "POST", base+"/metrics/"+m+"/preview?kind="+r.Kind, nil); code != http.StatusAccepted {
			t.Fatalf("preview %s: %d", m, code)
		}
		previewOf[m] = r.Kind
	}
	if code := apiJSON(t, "POST", base+"/metrics/http_requests_total/preview?kind=aggregate&labels=pod", nil); code != http.StatusAccepted {
		t.Fatalf("preview of the pod rule: %d", code)
	}
	previewOf["http_requests_total"] = adaptive.KindAggregate
	previews := map[string]adaptive.Preview{}
	waitFor(t, 30*time.Second, "every preview measured", func() bool {
		for m, kind := range previewOf {
			var p adaptive.Preview
			apiJSON(t, "GET", base+"/metrics/"+m+"/preview?kind="+kind, &p)
			previews[m] = p
			if p.State != adaptive.PreviewDone {
				return false
			}
		}
		return true
	})
	within := func(est, measured int64, frac float64, slack int64) bool {
		return math.Abs(float64(est-measured)) <= frac*float64(measured)+float64(slack)
	}
	for m, p := range previews {
		est := recs[m].Estimate.Saved
		if m == "http_requests_total" {
			est = pod.Estimate.Saved
		}
		t.Logf("preview   %-36s in %4d out %4d saved %4d; estimate %4d", m, p.SeriesIn, p.SeriesOut, p.SeriesSaved, est)
		if p.Truncated || !within(est, p.SeriesSaved, 0.10, 1) {
			t.Errorf("%s: estimate %d, preview measured %d: more than 10%% apart", m, est, p.SeriesSaved)
		}
	}
	if p := previews["http_requests_total"]; p.SeriesIn != 1000 || p.SeriesSaved != 0 {
		t.Errorf("aggregating pod away from http_requests_total: preview %d in, %d saved; want 1000 in, 0 saved", p.SeriesIn, p.SeriesSaved)
	}

	// Before: the series stored and every asset query's answer, once the
	// 20 s windows hold only samples of this test.
	queries := assetQueries(t, workloadDashboard, workloadRules)
	if len(queries) != 13 {
		t.Fatalf("%d queries extracted from the dashboard and the rule file, want 13 (1 variable, 7 panel targets, 5 rules)", len(queries))
	}
	time.Sleep(time.Until(w.start.Add(23 * time.Second)))
	vm := e.vm.URL + "/prometheus"
	stored := func(m string, at time.Time) int64 {
		for _, f := range vector(t, vm, `count(last_over_time({__name__="`+m+`"}[4s]))`, at) {
			return int64(f)
		}
		return 0
	}
	e.vm.Flush()
	t0 := time.Now().Add(-time.Second)
	before := map[string]int64{}
	for m := range recs {
		before[m] = stored(m, t0)
	}
	answers := make([]map[string]float64, len(queries))
	for i, q := range queries {
		answers[i] = q.run(t, vm, t0)
	}
	for m, r := range recs {
		var a adaptive.Applied
		if code := apiJSON(t, "POST", base+"/metrics/"+m+"/apply?kind="+r.Kind, &a); code != 200 {
			t.Fatalf("apply %s: %d", m, code)
		}
		if a.Preview == nil {
			t.Errorf("applied %s without its preview: %+v", m, a)
		}
	}
	applyAt := time.Now()
	// Once the 20 s windows, and the sample before each, have left the raw
	// series and the aggregator's first outputs (held up to two intervals
	// for the input that had the series to itself) behind.
	time.Sleep(time.Until(applyAt.Add(26 * time.Second)))
	e.vm.Flush()
	t1 := time.Now().Add(-time.Second)
	for m := range recs {
		after := stored(m, t1)
		saved := before[m] - after
		t.Logf("stored    %-36s before %4d after %4d: saved %4d, preview %4d", m, before[m], after, saved, previews[m].SeriesSaved)
		if !within(saved, previews[m].SeriesSaved, 0.02, 0) {
			t.Errorf("%s: stored series fell by %d, the preview measured %d", m, saved, previews[m].SeriesSaved)
		}
	}

	// Counters stay true: the increase of the aggregated series is the sum
	// of the increases written.
	reqs := 0.0
	for r := range apiRoutes {
		for p := range 10 {
			for u := range 10 {
				reqs += apiRate(r, p, u)
			}
		}
	}
	truths := map[string]float64{
		`sum(increase(http_request_duration_seconds_bucket{le="+Inf"}[20s]))`: 20 * reqs,
		`sum(increase(http_request_duration_seconds_count[20s]))`:             20 * reqs,
		`sum(increase(node_cpu_seconds_total[20s]))`:                          20 * 5 * 4, // each CPU: 1 s/s
	}
	for q, truth := range truths {
		for _, at := range []time.Time{t0, t1} {
			for _, root := range []string{vm, e.srv.URL} {
				v, ok := vector(t, root, q, at)[""]
				t.Logf("%s at %s through %s: %.1f, truth %.1f", q, at.Format(time.TimeOnly), root, v, truth)
				if !ok || math.Abs(v-truth) > 0.02*truth {
					t.Errorf("%s at %s through %s: %v, truth %v", q, at.Format(time.TimeOnly), root, v, truth)
				}
			}
		}
	}

	// Every query of the dashboard and the rule file answers as before,
	// directly and through cardguard.
	for i, q := range queries {
		for _, root := range []string{vm, e.srv.URL} {
			after := q.run(t, root, t1)
			worst := 0.0
			for k, v := range answers[i] {
				if a, ok := after[k]; ok && v != 0 {
					worst = max(worst, math.Abs(a-v)/math.Abs(v))
				}
			}
			t.Logf("query     %-40s %2d results before, %2d after through %s, largest difference %.3f%%", q.from, len(answers[i]), len(after), root, 100*worst)
			if len(after) != len(answers[i]) || len(after) == 0 {
				t.Errorf("%s: %s: %d results before, %d after through %s", q.from, q.query+q.match, len(answers[i]), len(after), root)
			}
			for k, v := range answers[i] {
				if a, ok := after[k]; !ok || math.Abs(a-v) > 0.02*math.Abs(v)+1e-9 {
					t.Errorf("%s: %s {%s}: %v before, %v after through %s", q.from, q.query+q.match, k, v, a, root)
				}
			}
		}
	}
	// vmalert went on reading node_boot_time_seconds throughout, and it was
	// never touched.
	if n := stored("node_boot_time_seconds", t1); n != 5 {
		t.Errorf("node_boot_time_seconds: %d series stored after the rules, want 5", n)
	}
}
