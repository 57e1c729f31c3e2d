package main

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
)

// TestUpstreamDownIs503ThenRecovers: with VictoriaMetrics stopped a write answers
// 503 (Prometheus retries it); once VictoriaMetrics is back the same request
// succeeds and its samples are there. Nothing is acknowledged that was not stored.
func TestUpstreamDownIs503ThenRecovers(t *testing.T) {
	e := newEnv(t, nil)
	ts := time.Now().Add(-time.Minute).UnixMilli()
	wr := &prompb.WriteRequest{Timeseries: genSeries("retry_me", 10, ts)}

	e.vm.Stop()
	code, body := e.push("/api/v1/write", wr)
	if code != 503 {
		t.Fatalf("upstream down: status %d (%s), want 503", code, body)
	}
	e.vm.Start()
	code, body = e.push("/api/v1/write", wr)
	if code != 204 {
		t.Fatalf("upstream back: status %d (%s), want 204", code, body)
	}
	e.vm.Flush()
	var resp struct {
		Data struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(e.vm.Get("/api/v1/query?query=count(retry_me)"), &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.Data.Result) != 1 {
		t.Fatalf("count(retry_me) after recovery: %v", resp.Data.Result)
	}
	var v struct {
		Value [2]any `json:"value"`
	}
	_ = json.Unmarshal(resp.Data.Result[0], &v)
	if v.Value[1] != "10" {
		t.Fatalf("count(retry_me) = %v, want 10", v.Value[1])
	}
}
