package ingest

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
)

// BenchmarkIngest measures one remote-write request of 2,000 series with 10 labels
// each through the whole handler: read, snappy, decode, validate, stages, forward
// to an in-process upstream over loopback HTTP, answer. MB/s is compressed bytes.
func BenchmarkIngest(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer up.Close()
	h := newTestHandler(b, up.URL, Config{}, 10*time.Second)
	body := makeRequest(2000, 10)
	t := tenant.MustParse("1")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req := httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(body))
		req.Header.Set("Content-Encoding", "snappy")
		req.Header.Set("Content-Type", "application/x-protobuf")
		rec := httptest.NewRecorder()
		h.ServeWrite(rec, req, t)
		if rec.Code != http.StatusNoContent {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/2000, "ns/series")
}
