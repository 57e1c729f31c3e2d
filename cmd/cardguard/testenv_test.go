package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/golang/snappy"

	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/upstream"
	"github.com/cardguard/cardguard/internal/vmtest"
)

// env is cardguard in-process in front of a real VictoriaMetrics.
type env struct {
	t   *testing.T
	vm  *vmtest.VM // the single node, or nil in front of a cluster
	be  *backend
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
	return newEnvOn(t, layoutSingle, mutate, logw)
}

// newEnvOn is cardguard in front of a VictoriaMetrics of the given layout:
// layoutCluster starts vmstorage, vminsert and vmselect (vmtest.StartCluster) and
// sets upstream mode cluster. e.be reaches VictoriaMetrics without cardguard
// whatever the layout; e.vm is nil in front of a cluster.
// mutate runs after the upstream section is set, so it can tell the layouts
// apart by cfg.Upstream.Mode.
func newEnvOn(t *testing.T, layout string, mutate func(*Config), logw io.Writer) *env {
	t.Helper()
	be := startBackend(t, layout)
	cfg := defaultConfig()
	cfg.Upstream = be.upstream()
	if mutate != nil {
		mutate(&cfg)
	}
	be.tenantLabel = cfg.Upstream.TenantLabel
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
	return &env{t: t, vm: be.vm, be: be, app: a, srv: srv}
}

// The layouts of VictoriaMetrics that cardguard runs in front of.
const (
	layoutSingle  = "single"  // one victoria-metrics node
	layoutCluster = "cluster" // vmstorage, vminsert and vmselect
)

// layouts are the names of subtests that run one test body against each layout.
var layouts = []string{layoutSingle, layoutCluster}

// backend is the real VictoriaMetrics a test runs cardguard in front of, and the
// way to look at it without cardguard in between.
type backend struct {
	t  *testing.T
	vm *vmtest.VM      // single layout
	cl *vmtest.Cluster // cluster layout
	// tenantLabel is the label that keeps tenants apart on a single node, or "".
	tenantLabel string
}

func startBackend(t *testing.T, layout string) *backend {
	t.Helper()
	switch layout {
	case layoutSingle:
		return &backend{t: t, vm: vmtest.StartVM(t)}
	case layoutCluster:
		return &backend{t: t, cl: vmtest.StartCluster(t)}
	}
	t.Fatalf("unknown layout %q", layout)
	return nil
}

// upstream is cardguard's upstream section for b.
func (b *backend) upstream() upstream.Config {
	if b.cl != nil {
		return upstream.Config{Mode: upstream.ModeCluster, InsertURL: b.cl.InsertURL, SelectURL: b.cl.SelectURL, Timeout: 5 * time.Second}
	}
	return upstream.Config{Mode: upstream.ModeSingle, URL: b.vm.URL, Timeout: 5 * time.Second}
}

// flush makes every sample VictoriaMetrics accepted so far searchable.
func (b *backend) flush() {
	b.t.Helper()
	if b.cl != nil {
		b.cl.Flush()
		return
	}
	b.vm.Flush()
}

// selectURL is the URL of the Prometheus API path apiPath (no leading slash)
// straight at VictoriaMetrics, confined to tenant tn the way cardguard confines
// it, or across every tenant when tn is "".
func (b *backend) selectURL(tn, apiPath string, args url.Values) string {
	args = maps.Clone(args)
	if args == nil {
		args = url.Values{}
	}
	if b.cl != nil {
		if tn == "" {
			tn = "multitenant"
		}
		return b.cl.SelectURL + "/select/" + tn + "/prometheus/" + apiPath + "?" + args.Encode()
	}
	if tn != "" && b.tenantLabel != "" {
		args.Set("extra_label", b.tenantLabel+"="+tenant.MustParse(tn).String())
	}
	return b.vm.URL + "/prometheus/" + apiPath + "?" + args.Encode()
}

// scalar runs an instant query straight at VictoriaMetrics for tenant tn (every
// tenant when "") and returns the first value, or -1 when the result is empty.
func (b *backend) scalar(tn, query string) float64 {
	b.t.Helper()
	return b.scalarWith(tn, url.Values{"query": {query}})
}

// scalarWith is scalar with the query's arguments (query, time, ...) given.
func (b *backend) scalarWith(tn string, args url.Values) float64 {
	b.t.Helper()
	query := args.Get("query")
	code, body := get(b.t, b.selectURL(tn, "api/v1/query", args))
	if code != http.StatusOK {
		b.t.Fatalf("%s (%s) for tenant %q: %d %s", query, args.Encode(), tn, code, body)
	}
	var resp struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		b.t.Fatalf("%s: %v: %s", query, err, body)
	}
	if len(resp.Data.Result) == 0 {
		return -1
	}
	f, _ := strconv.ParseFloat(resp.Data.Result[0].Value[1].(string), 64)
	return f
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
