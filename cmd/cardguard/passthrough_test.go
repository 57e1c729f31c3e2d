package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
)

// TestReadBackEqualsDirect pushes remote write 1.0 through cardguard into a real
// VictoriaMetrics, a single node and a cluster, for two tenants, and reads it back
// through cardguard and directly: every answer must be the same. JSON lines
// imported through cardguard export through it unchanged.
func TestReadBackEqualsDirect(t *testing.T) {
	for _, layout := range layouts {
		t.Run(layout, func(t *testing.T) {
			testReadBackEqualsDirect(t, newEnvOn(t, layout, nil, io.Discard))
		})
	}
}

func testReadBackEqualsDirect(t *testing.T, e *env) {
	now := time.Now().Add(-time.Minute).Truncate(time.Second)
	// Tenant 0 is written through the default paths, tenant 1 through its own;
	// each tenant's series carry its own job value.
	tenants := []struct{ id, write, job string }{{"0", "/api/v1/write", "api-0"}, {"1", "/insert/1/prometheus/api/v1/write", "api-1"}}
	imported := map[string][]string{}
	for _, tn := range tenants {
		var wr prompb.WriteRequest
		for step := 0; step < 5; step++ {
			ts := now.Add(time.Duration(step-4) * 15 * time.Second).UnixMilli()
			wr.Timeseries = append(wr.Timeseries, genSeries("http_requests_total", 20, ts, prompb.Label{Name: "job", Value: tn.job})...)
			wr.Timeseries = append(wr.Timeseries, genSeries("node_cpu_seconds_total", 8, ts, prompb.Label{Name: "mode", Value: "idle"}, prompb.Label{Name: "job", Value: tn.job})...)
		}
		if code, body := e.push(tn.write, &wr); code != 204 {
			t.Fatalf("push for tenant %s: %d %s", tn.id, code, body)
		}
		// The same data goes in and comes out of /api/v1/import and /api/v1/export.
		ms := now.UnixMilli()
		imported[tn.id] = []string{
			fmt.Sprintf(`{"metric":{"__name__":"rb_import_t%s","job":"%s","path":"/a"},"values":[1,2.5,-3],"timestamps":[%d,%d,%d]}`, tn.id, tn.job, ms-2000, ms-1000, ms),
			fmt.Sprintf(`{"metric":{"__name__":"rb_import_t%s","job":"%s","path":"/b"},"values":[1e+100],"timestamps":[%d]}`, tn.id, tn.job, ms),
		}
		path := "/api/v1/import"
		if tn.id != "0" {
			path = "/insert/" + tn.id + "/prometheus/api/v1/import"
		}
		if code, body, _ := postRaw(t, e.srv.URL+path, []byte(strings.Join(imported[tn.id], "\n")+"\n"), nil); code != 204 {
			t.Fatalf("import for tenant %s: %d %s", tn.id, code, body)
		}
	}
	e.be.flush()

	start := fmt.Sprint(now.Add(-5 * time.Minute).Unix())
	end := fmt.Sprint(now.Add(time.Minute).Unix())
	queries := []struct {
		path string
		args url.Values
	}{
		{"api/v1/query", url.Values{"query": {`sum by (job) (http_requests_total)`}, "time": {end}}},
		{"api/v1/query", url.Values{"query": {`1+1`}, "time": {end}}},
		{"api/v1/query_range", url.Values{"query": {`rate(http_requests_total[1m])`}, "start": {start}, "end": {end}, "step": {"15s"}}},
		{"api/v1/series", url.Values{"match[]": {`node_cpu_seconds_total`}, "start": {start}, "end": {end}}},
		{"api/v1/labels", url.Values{"start": {start}, "end": {end}}},
		{"api/v1/labels", url.Values{"match[]": {`http_requests_total`}, "start": {start}, "end": {end}}},
		{"api/v1/label/__name__/values", url.Values{"start": {start}, "end": {end}}},
		{"api/v1/label/id/values", url.Values{"match[]": {`node_cpu_seconds_total`}, "start": {start}, "end": {end}}},
		{"api/v1/label/job/values", url.Values{"start": {start}, "end": {end}}},
		{"api/v1/export", url.Values{"match[]": {`node_cpu_seconds_total{id="3"}`}, "start": {start}, "end": {end}}},
		{"api/v1/query", url.Values{"query": {`sum(`}}},
		{"api/v1/status/buildinfo", nil},
	}
	for _, tn := range tenants {
		vias := []string{"/select/" + tn.id + "/prometheus/"}
		if tn.id == "0" {
			vias = append(vias, "/", "/prometheus/")
		}
		for _, q := range queries {
			qs := q.args.Encode()
			dcode, dbody := get(t, e.be.selectURL(tn.id, q.path, q.args))
			if dcode == 200 && q.path != "api/v1/status/buildinfo" && !hasData(dbody) {
				t.Fatalf("%s: VictoriaMetrics returned no data for tenant %s, the test would prove nothing: %s", q.path, tn.id, dbody)
			}
			for _, via := range vias {
				ccode, cbody := get(t, e.srv.URL+via+q.path+"?"+qs)
				if ccode != dcode {
					t.Errorf("%s%s: status %d through cardguard, %d direct", via, q.path, ccode, dcode)
					continue
				}
				if !sameUnordered(cbody, dbody) {
					t.Errorf("%s%s?%s: through cardguard\n%s\ndirect\n%s", via, q.path, qs, cbody, dbody)
				}
				if e.app.scheme.Isolated() && bytes.Contains(cbody, []byte(otherJob(tn.job))) {
					t.Errorf("%s%s?%s: tenant %s sees the other tenant's series: %s", via, q.path, qs, tn.id, cbody)
				}
			}
			// Grafana sends query and query_range as form POST by default.
			if q.path == "api/v1/query" || q.path == "api/v1/query_range" {
				ccode, cbody := postForm(t, e.srv.URL+vias[0]+q.path, q.args)
				if ccode != dcode || !sameUnordered(cbody, dbody) {
					t.Errorf("POST %s%s: %d %s; direct %d %s", vias[0], q.path, ccode, cbody, dcode, dbody)
				}
			}
		}
		code, body := get(t, e.srv.URL+vias[0]+"api/v1/export?"+url.Values{"match[]": {"rb_import_t" + tn.id}}.Encode())
		if code != 200 {
			t.Fatalf("export of tenant %s: %d %s", tn.id, code, body)
		}
		got, want := sortedJSONLines(t, body), sortedJSONLines(t, []byte(strings.Join(imported[tn.id], "\n")))
		if !slices.Equal(got, want) {
			t.Errorf("tenant %s: imported\n%s\nexported through cardguard\n%s", tn.id, strings.Join(want, "\n"), strings.Join(got, "\n"))
		}
	}
	// A path outside the read table is refused by cardguard itself (VictoriaMetrics
	// would answer 400 "unsupported path requested"): never forwarded.
	for _, via := range []string{"/api/v1/no_such_endpoint", "/select/0/prometheus/api/v1/no_such_endpoint", "/prometheus/api/v1/no_such_endpoint"} {
		if code, body := get(t, e.srv.URL+via); code != 404 || !strings.Contains(string(body), `"errorType":"not_found"`) {
			t.Errorf("%s: %d %s, want cardguard's 404", via, code, body)
		}
	}
}

// sameUnordered is sameJSON for answers whose lists of series come in no
// particular order (VictoriaMetrics merges them from parallel workers and, in a
// cluster, from storage nodes): export lines, series, label names and values,
// and query results are compared as sets; the samples of a series keep their order.
func sameUnordered(a, b []byte) bool {
	na, erra := normalise(a)
	nb, errb := normalise(b)
	if erra != nil || errb != nil {
		return string(a) == string(b)
	}
	return reflect.DeepEqual(sortSeries(na), sortSeries(nb))
}

func sortSeries(lines []any) []any {
	for _, l := range lines {
		m, ok := l.(map[string]any)
		if !ok {
			continue
		}
		if d, ok := m["data"].([]any); ok {
			sortByJSON(d)
		}
		if d, ok := m["data"].(map[string]any); ok {
			if r, ok := d["result"].([]any); ok {
				sortByJSON(r)
			}
		}
	}
	return sortByJSON(lines)
}

func sortByJSON(list []any) []any {
	slices.SortFunc(list, func(x, y any) int {
		bx, _ := json.Marshal(x)
		by, _ := json.Marshal(y)
		return bytes.Compare(bx, by)
	})
	return list
}

func otherJob(job string) string {
	if job == "api-0" {
		return "api-1"
	}
	return "api-0"
}

// sortedJSONLines is each JSON line of b re-encoded with sorted keys, sorted.
func sortedJSONLines(t *testing.T, b []byte) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("JSON line %q: %v", line, err)
		}
		enc, _ := json.Marshal(v)
		out = append(out, string(enc))
	}
	slices.Sort(out)
	return out
}

// sameJSON compares two API answers after removing the fields that change from one
// request to the next (timings, statistics). Non-JSON bodies (export is JSON lines,
// errors may be text) are compared line by line as JSON where they parse, else as bytes.
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	na, erra := normalise(a)
	nb, errb := normalise(b)
	if erra != nil || errb != nil {
		return string(a) == string(b)
	}
	return reflect.DeepEqual(na, nb)
}

func normalise(b []byte) ([]any, error) {
	var out []any
	dec := json.NewDecoder(bytesReader(b))
	for dec.More() {
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		out = append(out, strip(v))
	}
	return out, nil
}

func strip(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for _, k := range []string{"stats", "isPartial", "trace"} {
			delete(x, k)
		}
		for k, vv := range x {
			x[k] = strip(vv)
		}
	case []any:
		for i := range x {
			x[i] = strip(x[i])
		}
	}
	return v
}

// hasData reports whether an API answer carries at least one result.
func hasData(b []byte) bool {
	var v struct {
		Data json.RawMessage `json:"data"`
	}
	if json.Unmarshal(b, &v) != nil || len(v.Data) == 0 {
		return len(b) > 0 // export: JSON lines
	}
	var r struct {
		Result []any `json:"result"`
	}
	if json.Unmarshal(v.Data, &r) == nil && r.Result != nil {
		return len(r.Result) > 0
	}
	var list []any
	if json.Unmarshal(v.Data, &list) == nil {
		return len(list) > 0
	}
	return false
}
