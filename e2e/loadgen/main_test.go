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

// TestReplicas: several -url are replicas sharing one walk of the ring; each
// round starts one replica further, so every payload's series reach every
// replica in turn, even when a round's length is a multiple of the replicas.
func TestReplicas(t *testing.T) {
	t.Parallel()
	var sink strings.Builder
	o, err := parseFlags([]string{"-url=http://127.0.0.1:1/api/v1/write,http://127.0.0.1:2/api/v1/write,http://127.0.0.1:3/api/v1/write", "-passes=1"}, &sink)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(o.targets()); got != 3 {
		t.Fatalf("%d targets, want 3", got)
	}
	if _, err := parseFlags([]string{"-url=http://127.0.0.1:1/,http://10.0.0.1:2/", "-passes=1"}, &sink); err == nil {
		t.Error("a replica off loopback: want an error")
	}
	if _, err := parseFlags([]string{"-url=http://127.0.0.1:1,http://127.0.0.1:2", "-passes=1", "-tenants=2"}, &sink); err == nil {
		t.Error("-tenants with several URLs: want an error")
	}
	// 3 rounds of 6 payloads over 3 replicas.
	cfg := sendConfig{URLs: o.targets(), RoundLen: 6}
	const nring = 18
	seen := map[int64]map[int64]bool{} // payload within the round → replicas
	perURL := map[int64]int{}
	for i := range int64(nring) {
		u, p := cfg.pick(i, 3, nring)
		if p != i {
			t.Fatalf("request %d sends payload %d: the replicas share one walk", i, p)
		}
		if seen[p%6] == nil {
			seen[p%6] = map[int64]bool{}
		}
		seen[p%6][u] = true
		perURL[u]++
	}
	for j, us := range seen {
		if len(us) != 3 {
			t.Errorf("payload %d of each round reached replicas %v, want all 3", j, us)
		}
	}
	for u, n := range perURL {
		if n != 6 {
			t.Errorf("replica %d took %d requests, want 6", u, n)
		}
	}
	// Tenants still walk the whole ring each.
	cfg.RoundLen = 0
	if u, p := cfg.pick(4, 2, nring); u != 0 || p != 2 {
		t.Errorf("tenant pick(4) = %d, %d; want 0, 2", u, p)
	}
}
