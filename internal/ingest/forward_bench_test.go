package ingest

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkForwardLargeBody posts a 512 KiB body (an uncompressed part of a
// request routed to its owner is about that) through the forwarder's
// transport, with its pooled-buffer connections and with plain ones, side by
// side: the difference in B/op is the copy buffer net/http's plain TCP path
// allocates per request.
func BenchmarkForwardLargeBody(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	body := make([]byte, 512<<10)
	pooled := newForwarder(10*time.Second, "", 4)
	plain := newForwarder(10*time.Second, "", 4)
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	plain.client.Transport.(*http.Transport).DialContext = dialer.DialContext
	for _, c := range []struct {
		name string
		f    *forwarder
	}{{"conn=pooled", pooled}, {"conn=plain", plain}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for range b.N {
				if err := c.f.forward(context.Background(), srv.URL, body, ""); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
