package ingest

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/klauspost/compress/zstd"

	"github.com/cardguard/cardguard/internal/tenant"
)

// lineProtocol is a Protocol for tests: every line "name value" is a series.
type lineProtocol struct{}

func (lineProtocol) Name() string { return "test" }

func (lineProtocol) Decode(_ *http.Request, body []byte, b *Builder) error {
	for _, line := range strings.Split(strings.TrimSpace(string(body)), "\n") {
		name, _, _ := strings.Cut(line, " ")
		b.Begin()
		b.Label("", name)
		b.Label("job", "a")
		b.Sample(1, 1)
		if err := b.End(); err != nil {
			return err
		}
	}
	return nil
}

func (lineProtocol) Answer(w http.ResponseWriter, _ *http.Request, o Outcome) int {
	if o.Err != nil {
		return WriteError(w, o.Err)
	}
	w.WriteHeader(http.StatusNoContent)
	return http.StatusNoContent
}

func postProtocol(h *Handler, body []byte, hdr map[string]string, query string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/x"+query, bytes.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeProtocol(rec, req, tenant.ID{}, lineProtocol{})
	return rec
}

func TestProtocolBodies(t *testing.T) {
	up := newFakeUpstream(t)
	h := newTestHandler(t, up.srv.URL, Config{MaxDecodedBytes: 1 << 20}, time.Second)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(bytes.Repeat([]byte("a 1\n"), 1<<20)) // 4 MiB
	_ = zw.Close()
	zenc, _ := zstd.NewWriter(nil)
	zbomb := zenc.EncodeAll(bytes.Repeat([]byte("a 1\n"), 1<<20), nil)
	zok := zenc.EncodeAll([]byte("up 1\n"), nil)
	for _, c := range []struct {
		name     string
		body     []byte
		hdr      map[string]string
		query    string
		want     int
		wantBody string
	}{
		{name: "plain", body: []byte("up 1\n"), want: 204},
		{name: "zstd", body: zok, hdr: map[string]string{"Content-Encoding": "zstd"}, want: 204},
		{name: "gzip over the decoded limit", body: gz.Bytes(), hdr: map[string]string{"Content-Encoding": "gzip"}, want: 413, wantBody: "-ingest.maxDecodedBytes"},
		{name: "zstd over the decoded limit", body: zbomb, hdr: map[string]string{"Content-Encoding": "zstd"}, want: 413, wantBody: "-ingest.maxDecodedBytes"},
		{name: "gzip that is not", body: []byte("up 1\n"), hdr: map[string]string{"Content-Encoding": "gzip"}, want: 400},
		{name: "unknown encoding", body: []byte("up 1\n"), hdr: map[string]string{"Content-Encoding": "br"}, want: 415},
		{name: "bad extra_label", body: []byte("up 1\n"), query: "?extra_label=nonsense", want: 400, wantBody: "extra_label"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := postProtocol(h, c.body, c.hdr, c.query)
			if rec.Code != c.want || !strings.Contains(rec.Body.String(), c.wantBody) {
				t.Errorf("got %d %q, want %d with %q", rec.Code, rec.Body.String(), c.want, c.wantBody)
			}
		})
	}
	up.status.Store(http.StatusServiceUnavailable)
	if rec := postProtocol(h, []byte("up 1\n"), nil, ""); rec.Code != 503 {
		t.Errorf("upstream 503: got %d, want 503", rec.Code)
	}
}

func TestProtocolRequestBudget(t *testing.T) {
	up := newFakeUpstream(t)
	h := newTestHandler(t, up.srv.URL, Config{}, time.Second)
	// Tiny lines of many series: over the budget of what a request may hold.
	body := bytes.Repeat([]byte("a\n"), 1<<20)
	if rec := postProtocol(h, body, nil, ""); rec.Code != 413 || !strings.Contains(rec.Body.String(), "too large to hold") {
		t.Errorf("got %d %q, want 413", rec.Code, rec.Body.String())
	}
	if up.forwarded() != 0 {
		t.Error("a request over its budget was forwarded")
	}
}

func TestBuilderLabels(t *testing.T) {
	body := []byte("nameinbody")
	var b Builder
	b.Reset(body, 0)
	b.Extra("env", "query")
	b.Begin()
	b.Label("", bytesString(body[:4]))
	b.Label("env", "data")
	b.Label("empty", "")
	b.Label("b", "1")
	b.Label("b", "2")
	b.Sample(1, 1)
	if err := b.End(); err != nil {
		t.Fatal(err)
	}
	b.Begin() // no samples: skipped
	b.Label("", "x")
	if err := b.End(); err != nil {
		t.Fatal(err)
	}
	wr, err := b.writeRequest()
	if err != nil {
		t.Fatal(err)
	}
	if len(wr.Timeseries) != 1 {
		t.Fatalf("%d series, want 1", len(wr.Timeseries))
	}
	got := seriesString(wr.Timeseries[0].Labels)
	if want := `{__name__="name",b="2",env="query"}`; got != want {
		t.Errorf("labels %s, want %s (name, the last of duplicates, extra_label over the data)", got, want)
	}
	if name := metricName(wr.Timeseries[0].Labels); unsafe.StringData(name) != &body[0] {
		t.Error("a string in the body was copied")
	}
}
