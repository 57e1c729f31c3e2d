package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/golang/snappy"

	"github.com/cardguard/cardguard/internal/vmtest"
)

// TestGracefulShutdown: a write in flight when SIGTERM arrives still gets its answer
// from upstream, and the server stops afterwards.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	arrived := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		close(arrived)
		time.Sleep(500 * time.Millisecond)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer up.Close()

	addr := vmtest.FreeAddr(t)
	o, err := parseFlags([]string{"-dataDir=" + t.TempDir(), "-httpListenAddr=" + addr, "-upstream.url=" + up.URL}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := loadConfig("")
	_ = applyFlags(&cfg, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, o, slog.New(slog.NewTextHandler(io.Discard, nil)), io.Discard) }()
	waitReady(t, "http://"+addr+"/readyz")

	wr := &prompb.WriteRequest{Timeseries: genSeries("inflight", 3, time.Now().UnixMilli())}
	result := make(chan int, 1)
	go func() {
		resp, err := http.Post("http://"+addr+"/api/v1/write", "application/x-protobuf", bytes.NewReader(snappy.Encode(nil, wr.MarshalProtobuf(nil))))
		if err != nil {
			result <- -1
			return
		}
		resp.Body.Close()
		result <- resp.StatusCode
	}()
	<-arrived
	cancel() // what SIGTERM does through signal.NotifyContext
	if code := <-result; code != http.StatusNoContent {
		t.Fatalf("in-flight write during shutdown: status %d, want 204", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server did not stop")
	}
	if _, err := http.Get("http://" + addr + "/healthz"); err == nil {
		t.Fatal("server still accepts connections after shutdown")
	}
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s not ready", url)
}
