package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
)

// TestReadBackEqualsDirect pushes remote write 1.0 through cardguard into a real
// VictoriaMetrics and reads it back through cardguard and directly: every answer
// must be the same.
func TestReadBackEqualsDirect(t *testing.T) {
	e := newEnv(t, nil)
	now := time.Now().Add(-time.Minute).Truncate(time.Second)
	var wr prompb.WriteRequest
	for step := 0; step < 5; step++ {
		ts := now.Add(time.Duration(step-4) * 15 * time.Second).UnixMilli()
		wr.Timeseries = append(wr.Timeseries, genSeries("http_requests_total", 20, ts, prompb.Label{Name: "job", Value: "api"})...)
		wr.Timeseries = append(wr.Timeseries, genSeries("node_cpu_seconds_total", 8, ts, prompb.Label{Name: "mode", Value: "idle"})...)
	}
	if code, body := e.push("/api/v1/write", &wr); code != 204 {
		t.Fatalf("push: %d %s", code, body)
	}
	e.vm.Flush()

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
		{"api/v1/export", url.Values{"match[]": {`node_cpu_seconds_total{id="3"}`}, "start": {start}, "end": {end}}},
		{"api/v1/query", url.Values{"query": {`sum(`}}},
		{"api/v1/status/buildinfo", nil},
	}
	for _, q := range queries {
		qs := q.args.Encode()
		direct := e.vm.URL + "/prometheus/" + q.path + "?" + qs
		dcode, dbody := get(t, direct)
		if dcode == 200 && q.path != "api/v1/status/buildinfo" && !hasData(dbody) {
			t.Fatalf("%s: VictoriaMetrics returned no data, the test would prove nothing: %s", q.path, dbody)
		}
		for _, via := range []string{"/" + q.path, "/select/0/prometheus/" + q.path, "/prometheus/" + q.path} {
			ccode, cbody := get(t, e.srv.URL+via+"?"+qs)
			if ccode != dcode {
				t.Errorf("%s: status %d through cardguard, %d direct", via, ccode, dcode)
				continue
			}
			if !sameJSON(t, cbody, dbody) {
				t.Errorf("%s?%s: through cardguard\n%s\ndirect\n%s", via, qs, cbody, dbody)
			}
		}
		// Grafana sends query and query_range as form POST by default.
		if q.path == "api/v1/query" || q.path == "api/v1/query_range" {
			ccode, cbody := postForm(t, e.srv.URL+"/"+q.path, q.args)
			if ccode != dcode || !sameJSON(t, cbody, dbody) {
				t.Errorf("POST %s: %d %s; direct %d %s", q.path, ccode, cbody, dcode, dbody)
			}
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
