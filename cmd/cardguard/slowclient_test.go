package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/vmtest"
)

// TestSlowClientIsCutOff: a client that sends headers and then trickles its body
// (slow loris) is disconnected once -http.readTimeout passes, and the write after
// it goes through. It holds no processing slot meanwhile: see
// TestSlowLorisOnOneTenantAgainstVM.
func TestSlowClientIsCutOff(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer up.Close()
	addr := vmtest.FreeAddr(t)
	o, err := parseFlags([]string{"-dataDir=" + t.TempDir(), "-httpListenAddr=" + addr, "-upstream.url=" + up.URL, "-http.readTimeout=1s", "-ingest.maxConcurrentRequests=2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := loadConfig("")
	_ = applyFlags(&cfg, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = serve(ctx, cfg, o, slog.New(slog.NewTextHandler(io.Discard, nil)), io.Discard)
	}()
	// Until serve returns it may write its snapshots into the data directory,
	// which t.TempDir removes once the test ends.
	defer func() { cancel(); <-done }()
	waitReady(t, "http://"+addr+"/readyz")

	// Two slow clients trickle their bodies.
	var conns []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST /api/v1/write HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\nContent-Length: 100000\r\n\r\nabc")
		conns = append(conns, c)
	}
	start := time.Now()
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 512)
		for {
			// Keep trickling a byte now and then, as a slow loris does.
			_, _ = c.Write([]byte("x"))
			if _, err := c.Read(buf); err != nil {
				break
			}
		}
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("slow clients were held for %s, want about the 1s read timeout", took)
	}
	// The slots are free again: a normal write goes through.
	wr := genSeries("after_slowloris", 2, time.Now().UnixMilli())
	resp, err := http.Post("http://"+addr+"/api/v1/write", "application/x-protobuf", bytesReader(encodeWR(&prompb.WriteRequest{Timeseries: wr})))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("write after slow clients: %d", resp.StatusCode)
	}
}
