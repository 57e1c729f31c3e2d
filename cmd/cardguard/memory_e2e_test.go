package main

import (
	"bytes"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/golang/snappy"
)

// rssBytes is the resident set of this process, cardguard's app included.
func rssBytes(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Skipf("no /proc/self/statm: %v", err)
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// peakRSS samples rssBytes until stop is called, which returns the largest.
func peakRSS(t *testing.T) (stop func() int64) {
	var peak atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if r := rssBytes(t); r > peak.Load() {
				peak.Store(r)
			}
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return func() int64 { close(done); wg.Wait(); return peak.Load() }
}

// heapInUse is the heap in use after the garbage collector ran and gave what it
// could back to the OS.
func heapInUse() (heap, rss uint64) {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse, m.HeapSys - m.HeapReleased
}

// TestMemoryBombsAgainstVM: the two memory bombs of issue 18 sent to a real
// cardguard in front of a real VictoriaMetrics: a legal 1.0 body of 15M tiny
// unknown fields (~1.4 MB compressed) and a 2.0 body of 15M empty symbols. Each
// is processed with a peak RSS well under 64 MiB above the baseline (it was
// 1.3 GB and 833 MB), and the heap in use returns to the baseline after.
func TestMemoryBombsAgainstVM(t *testing.T) {
	e := newEnv(t, nil)
	const n = 15_000_000
	bombs := []struct {
		name, contentType string
		body              []byte
	}{
		{"1.0 unknown fields", "application/x-protobuf", bytes.Clone(snappy.Encode(nil, bytes.Repeat([]byte{2 << 3, 0}, n)))},
		{"2.0 empty symbols", "application/x-protobuf;proto=io.prometheus.write.v2.Request", bytes.Clone(snappy.Encode(nil, bytes.Repeat([]byte{4<<3 | 2, 0}, n)))},
	}
	send := func(contentType string, body []byte) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/api/v1/write", bytes.NewReader(body))
		req.Header.Set("Content-Encoding", "snappy")
		req.Header.Set("Content-Type", contentType)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var msg bytes.Buffer
		_, _ = msg.ReadFrom(resp.Body)
		return resp.StatusCode, msg.String()
	}
	// Warm up the client, the server and the pools with a normal write.
	if code, msg := e.push("/api/v1/write", &prompb.WriteRequest{Timeseries: genSeries("bomb_warmup", 10, time.Now().UnixMilli())}); code != http.StatusNoContent {
		t.Fatalf("warm-up write: %d %s", code, msg)
	}
	const mib = 1 << 20
	baseHeap, _ := heapInUse()
	baseRSS := rssBytes(t)
	for _, b := range bombs {
		heapInUse() // what the last one freed goes back to the OS
		stop := peakRSS(t)
		start := time.Now()
		code, msg := send(b.contentType, b.body)
		took := time.Since(start)
		peak := stop()
		t.Logf("%s (%d bytes compressed, %d decoded): %d %q in %s; peak RSS %.1f MiB above the baseline of %.1f MiB",
			b.name, len(b.body), 2*n, code, strings.TrimSpace(msg), took.Round(time.Millisecond), float64(peak-baseRSS)/mib, float64(baseRSS)/mib)
		if code != http.StatusNoContent && code != http.StatusRequestEntityTooLarge && code != http.StatusBadRequest {
			t.Errorf("%s: status %d, want it processed (204) or refused (4xx)", b.name, code)
		}
		if peak-baseRSS > 64*mib {
			t.Errorf("%s: peak RSS %.1f MiB above the baseline, want under 64", b.name, float64(peak-baseRSS)/mib)
		}
	}
	heap, _ := heapInUse()
	rss := rssBytes(t)
	t.Logf("after: heap in use %.1f MiB (baseline %.1f), RSS %.1f MiB (baseline %.1f)",
		float64(heap)/mib, float64(baseHeap)/mib, float64(rss)/mib, float64(baseRSS)/mib)
	if heap > baseHeap+8*mib {
		t.Errorf("heap in use %.1f MiB after the bombs, want back at the baseline of %.1f MiB", float64(heap)/mib, float64(baseHeap)/mib)
	}

	// Eight at once, as in the report (6 GB then): each still holds its 30 MB
	// decoded body while it is processed, so only what is left after is checked.
	heapInUse()
	stop := peakRSS(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := bombs[i%2]
			_, _ = send(b.contentType, b.body)
		}()
	}
	wg.Wait()
	peak := stop()
	heap, _ = heapInUse()
	t.Logf("eight at once: peak RSS %.1f MiB above the baseline; after: heap in use %.1f MiB (baseline %.1f)",
		float64(peak-baseRSS)/mib, float64(heap)/mib, float64(baseHeap)/mib)
	if heap > baseHeap+8*mib {
		t.Errorf("heap in use %.1f MiB after eight bombs, want back at the baseline of %.1f MiB", float64(heap)/mib, float64(baseHeap)/mib)
	}
}
