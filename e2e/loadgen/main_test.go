package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cardguard/cardguard/e2e/workload"
)

func TestCheckLoopback(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:8428/api/v1/write", true},
		{"http://127.0.0.2:8428/api/v1/write", true},
		{"http://localhost:8490/api/v1/write", true},
		{"http://[::1]:8490/api/v1/write", true},
		{"http://10.0.0.1:8428/api/v1/write", false},
		{"http://example.com/api/v1/write", false},
		{"https://127.0.0.1/api/v1/write", false},
		{"http://0.0.0.0:8428/", false},
	} {
		if err := checkLoopback(tc.url); (err == nil) != tc.ok {
			t.Errorf("checkLoopback(%q) = %v, want ok=%v", tc.url, err, tc.ok)
		}
	}
}

func TestParseFlagsNeedsABound(t *testing.T) {
	t.Parallel()
	var sink strings.Builder
	if _, err := parseFlags([]string{"-url=http://127.0.0.1:1/api/v1/write"}, &sink); err == nil {
		t.Error("no -duration, -requests or -passes: want an error")
	}
	if _, err := parseFlags([]string{"-url=http://127.0.0.1:1/api/v1/write", "-duration=20m"}, &sink); err == nil {
		t.Error("-duration over the bound: want an error")
	}
	if _, err := parseFlags([]string{"-url=http://127.0.0.1:1/api/v1/write", "-passes=1"}, &sink); err != nil {
		t.Error(err)
	}
}

// TestProtocol: -protocol=otlp sends to the OTLP path of each tenant, with the
// headers of the Collector's otlphttp exporter; an unknown protocol is refused.
func TestProtocol(t *testing.T) {
	t.Parallel()
	var sink strings.Builder
	o, err := parseFlags([]string{"-url=http://127.0.0.1:1", "-passes=1", "-protocol=otlp", "-tenants=2"}, &sink)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := o.targets(), []string{"http://127.0.0.1:1/insert/1/opentelemetry/v1/metrics", "http://127.0.0.1:1/insert/2/opentelemetry/v1/metrics"}; !slices.Equal(got, want) {
		t.Errorf("targets %v, want %v", got, want)
	}
	h := requestHeader(o.wl.Protocol)
	if h.Get("Content-Encoding") != "gzip" || h.Get("Content-Type") != "application/x-protobuf" || h.Get("X-Prometheus-Remote-Write-Version") != "" {
		t.Errorf("OTLP headers %v", h)
	}
	if h := requestHeader(workload.RemoteWrite); h.Get("Content-Encoding") != "snappy" || h.Get("X-Prometheus-Remote-Write-Version") != "0.1.0" {
		t.Errorf("remote-write headers %v", h)
	}
	if _, err := parseFlags([]string{"-url=http://127.0.0.1:1", "-passes=1", "-protocol=influx"}, &sink); err == nil {
		t.Error("-protocol=influx: want an error")
	}
}

// TestRingCache: the second run with the same workload loads the payloads the
// first built; another workload, or a damaged file, builds them again.
func TestRingCache(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	w := workload.Workload{Metrics: 2, SeriesPerMetric: 20, Labels: 5, Rounds: 2, Batch: 10, Seed: 1, Start: 1_700_000_000_000, Interval: 15e9, MaxRingBytes: 1 << 20, Protocol: workload.OTLP}
	a, cached, err := loadRing(w, dir)
	if err != nil || cached {
		t.Fatalf("first run: cached %v, %v", cached, err)
	}
	b, cached, err := loadRing(w, dir)
	if err != nil || !cached || b.Digest != a.Digest || !slices.Equal(b.Samples, a.Samples) || b.UniqueSeries != a.UniqueSeries {
		t.Fatalf("second run: cached %v, %v, digest %s (first %s)", cached, err, b.Digest, a.Digest)
	}
	w.Protocol = workload.RemoteWrite
	if c, cached, err := loadRing(w, dir); err != nil || cached || c.Digest == a.Digest {
		t.Fatalf("other protocol: cached %v, %v", cached, err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "ring-*.gob"))
	if len(files) != 2 {
		t.Fatalf("cache holds %v", files)
	}
	for _, f := range files {
		if err := os.WriteFile(f, []byte("damaged"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if c, cached, err := loadRing(w, dir); err != nil || cached || c.Digest == "" {
		t.Fatalf("damaged file: cached %v, %v", cached, err)
	}
}
