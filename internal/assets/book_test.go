package assets

import (
	"encoding/json"
	"maps"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardguard/cardguard/internal/queryaudit"
	"github.com/cardguard/cardguard/internal/tenant"
)

// knownMetrics is what the cardinality tracker tells the book: the metric
// names of a tenant and, per metric, its labels (a metric without an entry has
// unknown labels).
type knownMetrics map[string][]string

func (k knownMetrics) MetricNames(tenant.ID) []string { return slices.Sorted(maps.Keys(k)) }

func (k knownMetrics) LabelValueCount(_ tenant.ID, metric, label string) (int64, bool) {
	ls, ok := k[metric]
	if !ok || ls == nil {
		return 0, false
	}
	if slices.Contains(ls, label) {
		return 1, true
	}
	return 0, true
}

var known = knownMetrics{
	"node_uname_info":                   {"job", "instance"},
	"node_boot_time_seconds":            {"job", "instance"},
	"node_cpu_seconds_total":            {"job", "instance", "mode", "cpu"},
	"node_load1":                        {"job", "instance"},
	"node_memory_MemAvailable_bytes":    {"job", "instance"},
	"node_memory_MemFree_bytes":         {"job", "instance", "type"},
	"node_network_receive_bytes_total":  {"job", "instance", "device"},
	"node_network_transmit_bytes_total": {"job", "instance", "device"},
	"node_network_up":                   {"job", "instance", "device"},
	"node_filesystem_size_bytes":        {"job", "instance", "fstype", "device"},
	"node_filesystem_avail_bytes":       {"job", "instance", "fstype", "device"},
	"node_forks_total":                  {"job", "instance"},
	"http_requests_total":               {"service", "code"},
	"up":                                {"job", "instance"},
	"unused_metric_total":               {"job"},
}

var (
	t1 = tenant.MustParse("1")
	t2 = tenant.MustParse("2")
)

// assetsDir lays the test assets out as an operator would: dashboards at the
// top for every tenant, tenant 1:0's rules in 1:0/, and a folder that is no
// tenant.
func assetsDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	copyDir(t, "testdata/global", dir)
	copyDir(t, "testdata/tenant", filepath.Join(dir, "1:0"))
	if err := os.Mkdir(filepath.Join(dir, "not-a-tenant"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// summary renders a use as "label:use,use ... [all]" for comparison.
func summary(u AssetUse) string {
	var parts []string
	for _, l := range slices.Sorted(maps.Keys(u.Labels)) {
		parts = append(parts, l+":"+strings.Join(u.Labels[l].Strings(), ","))
	}
	if u.AllLabels {
		parts = append(parts, "[all]")
	}
	return strings.Join(parts, " ")
}

func newBook(t *testing.T, cfg Config) *Book {
	t.Helper()
	b, err := New(cfg, known, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestUses(t *testing.T) {
	t.Parallel()
	b := newBook(t, Config{Dir: assetsDir(t)})
	got := map[string]string{}
	uses := b.Uses(t1)
	for m, u := range uses {
		got[m] = summary(u)
	}
	want := map[string]string{
		// label_values(node_uname_info, job)
		"node_uname_info": "job:values",
		// label_values(node_boot_time_seconds{job=~"$job"}, instance)
		"node_boot_time_seconds": "instance:values job:matcher",
		// rate(...{instance=~"$instance", mode!="idle"}[$__rate_interval]) by mode; the rule's sum by (instance)
		"node_cpu_seconds_total": "instance:matcher,grouping mode:matcher,grouping",
		// avg_over_time(node_load1{instance="${instance:regex}"}[$step]) > $n
		"node_load1": "instance:matcher [all]",
		// sum by ($group) with $group custom instance,job
		"node_memory_MemAvailable_bytes": "instance:grouping job:matcher,grouping",
		// topk($n, rate(${netmetric}{device!="lo"}[...])), $netmetric from metrics(node_network_.*_total)
		"node_network_receive_bytes_total":  "device:matcher [all]",
		"node_network_transmit_bytes_total": "device:matcher [all]",
		// query_result(count by (fstype) (...{instance="$instance"})), and the MetricsQL rule's join
		"node_filesystem_size_bytes":  "device:join fstype:grouping instance:matcher,join",
		"node_filesystem_avail_bytes": "device:join fstype:matcher instance:join [all]",
		// the library panel, in its own file and through the dashboard
		"http_requests_total": "code:matcher service:matcher,grouping",
		// rules of tenant 1:0
		"up": "job:matcher [all]",
		// {type="free"} < 100: only the metric with a type label
		"node_memory_MemFree_bytes": "type:matcher [all]",
	}
	if !maps.Equal(got, want) {
		for _, m := range slices.Sorted(maps.Keys(want)) {
			if got[m] != want[m] {
				t.Errorf("%s\n got %q\nwant %q", m, got[m], want[m])
			}
		}
		for m := range got {
			if _, ok := want[m]; !ok {
				t.Errorf("unexpected %s: %q", m, got[m])
			}
		}
	}

	var refs []string
	for _, r := range uses["http_requests_total"].Refs {
		refs = append(refs, r.Kind+" "+r.File+" "+r.Title+" / "+r.Panel)
	}
	wantRefs := []string{
		"library_panel lib-errors.json  / HTTP errors",
		"library_panel nodes.json Nodes / Errors (library) (library panel HTTP errors)",
	}
	if !slices.Equal(refs, wantRefs) {
		t.Errorf("http_requests_total refs\n got %q\nwant %q", refs, wantRefs)
	}
	up := uses["up"].Refs
	if len(up) != 1 || up[0] != (AssetRef{Kind: KindRule, File: "1:0/rules.yaml", Title: "node", Rule: "NodeDown", Expr: `up{job="node"} == 0`}) {
		t.Errorf("up refs %+v", up)
	}

	// Tenant 2 has the dashboards, not tenant 1:0's rules.
	u2 := b.Uses(t2)
	if _, ok := u2["up"]; ok {
		t.Error("tenant 2 is credited with tenant 1:0's rule")
	}
	if _, ok := u2["node_load1"]; !ok {
		t.Error("tenant 2 misses the dashboards of every tenant")
	}
}

func TestFilesErrors(t *testing.T) {
	t.Parallel()
	b := newBook(t, Config{Dir: assetsDir(t)})
	files := b.Files(t1)
	byFile := map[string]FileStatus{}
	for _, f := range files {
		byFile[f.File] = f
	}
	wantErr := map[string][]string{
		".":                 {"folder not-a-tenant/ is no tenant"},
		"bad.yaml":          {"invalid rule file"},
		"nodes.json":        {"Nodes: Broken: cannot parse query", "library panel Gone (uid lib-missing) is not among the assets"},
		"1:0/broken.json":   {"invalid JSON"},
		"1:0/rules.yaml":    {"group broken: rule Broken: cannot parse query"},
		"lib-errors.json":   nil,
		"README.md (never)": nil,
	}
	for file, wants := range wantErr {
		f, ok := byFile[file]
		if strings.HasSuffix(file, "(never)") {
			if _, ok := byFile[strings.TrimSuffix(file, " (never)")]; ok {
				t.Errorf("%s listed", file)
			}
			continue
		}
		if !ok {
			t.Errorf("%s not listed: %+v", file, files)
			continue
		}
		if len(f.Errors) != len(wants) {
			t.Errorf("%s errors %q, want %d like %q", file, f.Errors, len(wants), wants)
			continue
		}
		for i, w := range wants {
			if !strings.Contains(f.Errors[i], w) {
				t.Errorf("%s error %d = %q, want it to say %q", file, i, f.Errors[i], w)
			}
		}
	}
	if f := byFile["1:0/rules.yaml"]; f.Expressions != 4 || f.Tenant != "1:0" {
		t.Errorf("rules.yaml: %d expressions, tenant %q; want 4 (graphite left out) and 1:0", f.Expressions, f.Tenant)
	}
	for _, f := range b.Files(t2) {
		if strings.HasPrefix(f.File, "1:0/") {
			t.Errorf("tenant 2 lists %s", f.File)
		}
	}
}

// Changed, added and removed files are seen by the next scan.
func TestScanChanges(t *testing.T) {
	t.Parallel()
	dir := assetsDir(t)
	b := newBook(t, Config{Dir: dir})
	rules := filepath.Join(dir, "1:0", "rules.yaml")
	if err := os.WriteFile(rules, []byte("groups:\n- name: g\n  rules:\n  - record: r\n    expr: sum(unused_metric_total)\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Another size, and a later mtime even on coarse file systems.
	future := time.Now().Add(time.Minute)
	_ = os.Chtimes(rules, future, future)
	if err := os.Remove(filepath.Join(dir, "nodes.json")); err != nil {
		t.Fatal(err)
	}
	b.Scan()
	u := b.Uses(t1)
	if _, ok := u["up"]; ok {
		t.Error("up still credited after its rule was removed")
	}
	if _, ok := u["unused_metric_total"]; !ok {
		t.Error("the changed rule file was not re-read")
	}
	if _, ok := u["node_load1"]; ok {
		t.Error("the removed dashboard still counts")
	}
}

func TestAPI(t *testing.T) {
	t.Parallel()
	up := t.TempDir()
	b := newBook(t, Config{UploadDir: up, MaxAssetBytes: 4096, MaxAssets: 2})
	r := chi.NewRouter()
	b.Routes(r, nil, nil)
	do := func(method, path, body string) (int, string) {
		t.Helper()
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		return w.Code, w.Body.String()
	}
	dash := `{"title":"D","panels":[{"title":"P","targets":[{"expr":"rate(up[$__rate_interval])"},{"expr":"sum(("}]}]}`
	tests := []struct {
		method, path, body string
		code               int
		says               string
	}{
		{"PUT", "/usage/tenants/1/assets/d.json", dash, 200, `"expressions":1`},
		{"PUT", "/usage/tenants/1/assets/d.json", dash, 200, `cannot parse query`},
		{"GET", "/usage/tenants/1:0/assets", "", 200, `"file":"uploaded/d.json"`},
		{"GET", "/usage/tenants/1:0/assets/uses", "", 200, `"metric":"up","labels":{},"allLabels":true`},
		{"GET", "/usage/tenants/2/assets/uses", "", 200, `"metrics":[]`},
		{"PUT", "/usage/tenants/1/assets/bad.json", `{"panels": [`, 400, "invalid JSON"},
		{"PUT", "/usage/tenants/1/assets/bad.yaml", "groups: [", 400, "invalid rule file"},
		{"PUT", "/usage/tenants/1/assets/notes.txt", "x", 400, "bad asset name"},
		{"PUT", "/usage/tenants/1/assets/.hidden.json", dash, 400, "bad asset name"},
		{"PUT", "/usage/tenants/x/assets/d.json", dash, 400, "invalid accountID"},
		{"PUT", "/usage/tenants/1/assets/big.json", `{"panels":[` + strings.Repeat(" ", 5000) + `]}`, 413, "usage.max_asset_bytes"},
		{"PUT", "/usage/tenants/1/assets/r.yml", "groups:\n- name: g\n  rules:\n  - alert: a\n    expr: up == 0\n", 200, `"expressions":1`},
		{"PUT", "/usage/tenants/1/assets/third.yml", "groups:\n- name: g\n", 409, "usage.max_assets"},
		{"DELETE", "/usage/tenants/1/assets/r.yml", "", 204, ""},
		{"DELETE", "/usage/tenants/1/assets/r.yml", "", 404, "no such uploaded asset"},
	}
	for _, tc := range tests {
		code, body := do(tc.method, tc.path, tc.body)
		if code != tc.code || !strings.Contains(body, tc.says) {
			t.Errorf("%s %s: %d %s\nwant %d saying %q", tc.method, tc.path, code, body, tc.code, tc.says)
		}
		if code != 204 && !json.Valid([]byte(body)) {
			t.Errorf("%s %s: not JSON: %s", tc.method, tc.path, body)
		}
	}
	// Uploads survive a restart.
	b2 := newBook(t, Config{UploadDir: up})
	if _, ok := b2.Uses(t1)["up"]; !ok {
		t.Error("the uploaded dashboard was not read back from the upload directory")
	}
	if files := b2.Files(t1); len(files) != 1 || files[0].Origin != originUpload {
		t.Errorf("files after restart %+v", files)
	}
}

func TestSubstitute(t *testing.T) {
	t.Parallel()
	vars := map[string]*variable{
		"n":      {numeric: true},
		"metric": {values: []string{"a_total", "b_total"}},
	}
	tests := []struct{ in, want string }{
		{`rate(x{a=~"$a"}[$__rate_interval])`, `rate(x{a=~".*"}[5m])`},
		{`rate(x[${__interval}]) offset $__range`, `rate(x[5m]) offset 5m`},
		{`topk($n, x) * $__range_s`, `topk(1, x) * 1`},
		{`label_replace(x, "d", "$1", "s", "(.*)")`, `label_replace(x, "d", "$1", "s", "(.*)")`},
		{`$metric{a="[[b]]"} / ${metric:raw}`, `__cardguard_var_0__{a=".*"} / __cardguard_var_0__`},
		{`max_over_time(x[$r:$__interval])`, `max_over_time(x[5m:5m])`},
	}
	for _, tc := range tests {
		got := substitute(tc.in, maps.Clone(vars))
		if got.expr != tc.want {
			t.Errorf("substitute(%q) = %q, want %q", tc.in, got.expr, tc.want)
		}
		if _, err := queryaudit.Extract(got.expr); err != nil {
			t.Errorf("substitute(%q) does not parse: %v", tc.in, err)
		}
	}
}

// Uses and Scan run together; run with -race.
func TestConcurrent(t *testing.T) {
	t.Parallel()
	b := newBook(t, Config{Dir: assetsDir(t), UploadDir: t.TempDir()})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				switch (i + j) % 4 {
				case 0:
					b.Scan()
				case 1:
					_ = b.Uses(t1)
				case 2:
					_, _ = b.Put(t1, "x.json", []byte(`{"panels":[{"targets":[{"expr":"up"}]}]}`))
				default:
					_ = b.Files(t1)
				}
			}
		}()
	}
	wg.Wait()
}

func FuzzParseFile(f *testing.F) {
	for _, p := range []string{"testdata/global/nodes.json", "testdata/global/lib-errors.json", "testdata/tenant/rules.yaml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(filepath.Ext(p), b)
	}
	f.Fuzz(func(t *testing.T, ext string, b []byte) {
		p, err := parseFile("f"+ext, b)
		if err == nil && p == nil {
			t.Fatal("nil parse without error")
		}
		if p != nil && len(p.errs) > maxErrorsPerFile+1 {
			t.Fatalf("%d errors kept", len(p.errs))
		}
	})
}
