package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// grafanaQuery is one request shape Grafana's Prometheus datasource sends.
type grafanaQuery struct {
	Name   string
	Path   string // under /api/v1/
	Method string // Grafana posts forms for query and query_range
	Params url.Values
}

// queryResult compares one query direct and through cardguard.
type queryResult struct {
	Name         string  `json:"name"`
	Expr         string  `json:"expr"`
	DirectP50    float64 `json:"direct_p50_ms"`
	DirectP99    float64 `json:"direct_p99_ms"`
	CardguardP50 float64 `json:"cardguard_p50_ms"`
	CardguardP99 float64 `json:"cardguard_p99_ms"`
	// Items in the answer (series, labels or values), to show both sides answered
	// the same, non-empty thing.
	DirectItems    int      `json:"direct_items"`
	CardguardItems int      `json:"cardguard_items"`
	Errors         []string `json:"errors,omitempty"`
}

func (e *env) grafanaQueries() []grafanaQuery {
	end := e.cfg.wl.dataEnd().Add(15 * time.Second)
	start := time.UnixMilli(e.cfg.wl.start).Add(-5 * time.Minute)
	ts := func(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }
	m := func(i int) string { return fmt.Sprintf("loadgen_m%04d_total", i%e.cfg.wl.metrics) }
	return []grafanaQuery{
		{"instant query", "query", http.MethodPost, url.Values{
			"query": {"sum by (namespace) (" + m(0) + `{env="prod"})`}, "time": {ts(end)},
		}},
		{"range query", "query_range", http.MethodPost, url.Values{
			"query": {"sum by (job) (rate(" + m(1) + "[1m]))"}, "start": {ts(start)}, "end": {ts(end)}, "step": {"15"},
		}},
		{"series", "series", http.MethodGet, url.Values{
			"match[]": {m(2) + `{env="prod"}`}, "start": {ts(start)}, "end": {ts(end)},
		}},
		{"labels", "labels", http.MethodGet, url.Values{
			"match[]": {m(3)}, "start": {ts(start)}, "end": {ts(end)},
		}},
		{"label values", "label/job/values", http.MethodGet, url.Values{
			"match[]": {m(4)}, "start": {ts(start)}, "end": {ts(end)},
		}},
	}
}

// queryBench sends each query alternately to VictoriaMetrics and to cardguard,
// one at a time, so that both see the same machine load and the same cache state.
func (e *env) queryBench(ctx context.Context, cardguardURL string) ([]queryResult, error) {
	client := &http.Client{Timeout: 30 * time.Second}
	const warm = 10
	var out []queryResult
	for _, q := range e.grafanaQueries() {
		r := queryResult{Name: q.Name, Expr: q.Params.Get("query") + q.Params.Get("match[]")}
		var dl, cl []time.Duration
		for i := range warm + e.cfg.queryIters {
			if ctx.Err() != nil {
				return out, ctx.Err()
			}
			targets := [2]string{e.vmURL, cardguardURL}
			if i%2 == 1 {
				targets[0], targets[1] = targets[1], targets[0]
			}
			for _, base := range targets {
				d, items, err := doQuery(client, base, q)
				if err != nil {
					if len(r.Errors) < 3 {
						r.Errors = append(r.Errors, err.Error())
					}
					continue
				}
				if i < warm {
					continue
				}
				if base == e.vmURL {
					dl, r.DirectItems = append(dl, d), items
				} else {
					cl, r.CardguardItems = append(cl, d), items
				}
			}
		}
		if r.DirectItems == 0 || r.CardguardItems == 0 {
			// An empty answer is cheap on both sides: its latency says nothing.
			r.Errors = append(r.Errors, fmt.Sprintf("empty answer (%d items direct, %d through cardguard): these figures are not of a real query", r.DirectItems, r.CardguardItems))
		}
		slices.Sort(dl)
		slices.Sort(cl)
		r.DirectP50, r.DirectP99 = ms(pct(dl, 0.5)), ms(pct(dl, 0.99))
		r.CardguardP50, r.CardguardP99 = ms(pct(cl, 0.5)), ms(pct(cl, 0.99))
		e.logf("query %s: direct p50 %.2fms p99 %.2fms, cardguard p50 %.2fms p99 %.2fms",
			q.Name, r.DirectP50, r.DirectP99, r.CardguardP50, r.CardguardP99)
		out = append(out, r)
	}
	return out, nil
}

func doQuery(client *http.Client, base string, q grafanaQuery) (time.Duration, int, error) {
	u := base + "/api/v1/" + q.Path
	var req *http.Request
	var err error
	if q.Method == http.MethodPost {
		req, err = http.NewRequest(http.MethodPost, u, strings.NewReader(q.Params.Encode()))
		if err == nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	} else {
		req, err = http.NewRequest(http.MethodGet, u+"?"+q.Params.Encode(), nil)
	}
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("X-Dashboard-Uid", "bench")
	req.Header.Set("X-Panel-Id", "1")
	t0 := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	d := time.Since(t0)
	if err != nil {
		return 0, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("%s %s: status %d: %.200s", q.Method, u, resp.StatusCode, body)
	}
	var ans struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return d, 0, fmt.Errorf("%s: %w", u, err)
	}
	return d, countItems(ans.Data), nil
}

// countItems is the length of data (a list) or of data.result.
func countItems(data json.RawMessage) int {
	var list []json.RawMessage
	if json.Unmarshal(data, &list) == nil {
		return len(list)
	}
	var res struct {
		Result []json.RawMessage `json:"result"`
	}
	if json.Unmarshal(data, &res) == nil {
		return len(res.Result)
	}
	return -1
}

func pct(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
