package main

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/golang/snappy"

	"github.com/cardguard/cardguard/internal/upstream"
	"github.com/cardguard/cardguard/internal/vmtest"
)

// env is cardguard in-process in front of a real VictoriaMetrics.
type env struct {
	t   *testing.T
	vm  *vmtest.VM
	app *app
	srv *httptest.Server
}

func newEnv(t *testing.T, mutate func(*Config)) *env {
	t.Helper()
	return newEnvWithLog(t, mutate, io.Discard)
}

// newEnvWithLog is newEnv with cardguard's log written to logw.
func newEnvWithLog(t *testing.T, mutate func(*Config), logw io.Writer) *env {
	t.Helper()
	vm := vmtest.StartVM(t)
	cfg := defaultConfig()
	cfg.Upstream = upstream.Config{Mode: upstream.ModeSingle, URL: vm.URL, Timeout: 5 * time.Second}
	if mutate != nil {
		mutate(&cfg)
	}
	o := testOptions(t)
	a, err := newApp(cfg, o, slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.stop)
	srv := httptest.NewServer(a.routes())
	t.Cleanup(srv.Close)
	a.ready.Store(true)
	return &env{t: t, vm: vm, app: a, srv: srv}
}

func testOptions(t *testing.T) options {
	o, err := parseFlags([]string{"-dataDir=" + t.TempDir()}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// push sends a remote-write request through cardguard and returns the status and body.
func (e *env) push(path string, wr *prompb.WriteRequest, hdr ...string) (int, string) {
	e.t.Helper()
	body := encodeWR(wr)
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+path, bytes.NewReader(body))
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("push: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// get fetches base+path and returns status and body.
func get(t *testing.T, rawURL string, hdr ...string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, rawURL, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func postForm(t *testing.T, rawURL string, form url.Values, hdr ...string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, rawURL, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// genSeries returns n series of metric, each with label "id" = 0..n-1 plus the
// extra labels, one sample each with value i at timestamp ts (ms).
func genSeries(metric string, n int, ts int64, extra ...prompb.Label) []prompb.TimeSeries {
	out := make([]prompb.TimeSeries, 0, n)
	for i := 0; i < n; i++ {
		ls := []prompb.Label{{Name: "__name__", Value: metric}, {Name: "id", Value: strconv.Itoa(i)}}
		ls = append(ls, extra...)
		out = append(out, prompb.TimeSeries{Labels: ls, Samples: []prompb.Sample{{Value: float64(i), Timestamp: ts}}})
	}
	return out
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

func encodeWR(wr *prompb.WriteRequest) []byte { return snappy.Encode(nil, wr.MarshalProtobuf(nil)) }
