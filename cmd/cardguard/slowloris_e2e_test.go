package main

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sort"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
)

// TestSlowLorisOnOneTenantAgainstVM: 16 connections of tenant 1 that declare
// 32 MiB bodies and send a byte every 5 s (as many as there are processing slots)
// leave tenant 2's writes answered 204 within their normal latency, against a
// real VictoriaMetrics. They used to hold every slot for the 60 s read timeout,
// and tenant 2 got 503 after the 10 s queue wait.
func TestSlowLorisOnOneTenantAgainstVM(t *testing.T) {
	e := authEnv(t, &lockedBuffer{})
	tenant2 := func(i int) (int, time.Duration) {
		wr := &prompb.WriteRequest{Timeseries: genSeries("loris_victim", 20, time.Now().UnixMilli(), prompb.Label{Name: "round", Value: fmt.Sprint(i)})}
		start := time.Now()
		code, msg := e.push("/insert/2/prometheus/api/v1/write", wr, "Authorization", "Bearer "+tokB)
		if code != http.StatusNoContent {
			t.Errorf("tenant 2 write %d: %d %s, want 204", i, code, msg)
		}
		return code, time.Since(start)
	}
	var normal []time.Duration
	for i := range 5 {
		_, d := tenant2(i)
		normal = append(normal, d)
	}

	u, _ := url.Parse(e.srv.URL)
	stop := make(chan struct{})
	defer close(stop)
	for i := range 16 {
		c, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST /insert/1/prometheus/api/v1/write HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\nContent-Length: %d\r\n\r\nx", u.Host, tokA, 32<<20)
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Second):
					_, _ = c.Write([]byte{byte(i)})
				}
			}
		}()
	}
	time.Sleep(time.Second) // every slow client is in

	var during []time.Duration
	deadline := time.Now().Add(12 * time.Second) // past the 10 s queue wait
	for i := 5; time.Now().Before(deadline); i++ {
		_, d := tenant2(i)
		during = append(during, d)
		// Generous: a write that waited for a slot would take the whole 10 s
		// queue wait and get 503.
		if d > 5*time.Second {
			t.Errorf("tenant 2 write %d took %s with tenant 1's slow clients connected", i, d)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("tenant 2 write latency: alone %s; with 16 slow clients of tenant 1 connected %s", summary(normal), summary(during))
}

// summary is the median and the largest of ds.
func summary(ds []time.Duration) string {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return fmt.Sprintf("median %s, max %s over %d writes", s[len(s)/2].Round(time.Microsecond), s[len(s)-1].Round(time.Microsecond), len(s))
}
