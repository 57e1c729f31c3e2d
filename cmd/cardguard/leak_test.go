package main

import (
	"bytes"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cardguard/cardguard/internal/upstream"
)

// appGoroutines returns the stacks of the goroutines running cardguard's
// code, by goroutine header line.
func appGoroutines() map[string]string {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	out := map[string]string{}
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		s := string(g)
		if !strings.Contains(s, "github.com/cardguard/cardguard/") || strings.Contains(s, "testing.tRunner") {
			continue
		}
		head, _, _ := strings.Cut(s, "\n")
		id := strings.Fields(head)
		if len(id) > 1 {
			out[id[1]] = s
		}
	}
	return out
}

// TestStopEndsEveryLoop: stop ends every goroutine the app started: the
// recommendations engine, the readers, the series usage, the assets and the
// metric name stats pollers, the loops of the usage and the tracker.
func TestStopEndsEveryLoop(t *testing.T) {
	before := appGoroutines()
	cfg := defaultConfig()
	// Nothing listens there: the pollers fail and go on until stopped.
	cfg.Upstream = upstream.Config{Mode: upstream.ModeSingle, URL: "http://127.0.0.1:1", Timeout: time.Second}
	cfg.Usage.AssetsDir = t.TempDir()
	a, err := newApp(cfg, testOptions(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.start(t.Context()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if len(appGoroutines()) <= len(before) {
		t.Fatal("the app started no goroutine: the test tests nothing")
	}
	a.stop()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []string
		for id, s := range appGoroutines() {
			if _, ok := before[id]; !ok {
				left = append(left, s)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines still run after stop:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
