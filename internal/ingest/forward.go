package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// forwarder posts remote-write bodies to VictoriaMetrics over pooled connections.
type forwarder struct {
	client  *http.Client
	timeout time.Duration
	bearer  string
}

func newForwarder(timeout time.Duration, bearer string, maxConns int) *forwarder {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	copyBufs := &sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return copyConn{Conn: c, bufs: copyBufs}, nil
		},
		MaxIdleConns:        maxConns,
		MaxIdleConnsPerHost: maxConns,
		IdleConnTimeout:     90 * time.Second,
		// The body is already snappy; asking for gzip answers would only cost CPU.
		DisableCompression: true,
		// net/http copies a body of known length through io.LimitReader: with the
		// default 4 KiB buffer that is a 32 KiB copy buffer allocated per request
		// and a write per 32 KiB. A buffer that holds a typical compressed request
		// (Prometheus sends 20-200 KiB) makes it one write with the headers and no
		// allocation; the part of a larger body past the first 128 KiB goes the
		// default way.
		WriteBufferSize:       128 << 10,
		ResponseHeaderTimeout: timeout,
	}
	return &forwarder{client: &http.Client{Transport: tr}, timeout: timeout, bearer: bearer}
}

// copyBufSize is the size of copyConn's buffers: the transport's write buffer.
const copyBufSize = 128 << 10

// copyConn copies bodies into the connection through a pooled buffer. The
// part of a body past the transport's write buffer reaches the connection as
// an io.LimitedReader, which (*net.TCPConn).ReadFrom copies through a 32 KiB
// buffer it allocates each time: 80 of the 1550 MB the 3 replicas of a make
// bench-scale run allocated, where parts of requests travel uncompressed
// between replicas.
type copyConn struct {
	net.Conn
	bufs *sync.Pool
}

func (c copyConn) ReadFrom(r io.Reader) (int64, error) {
	buf := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(buf)
	// Only the Writer: the connection's own ReadFrom is what allocates.
	return io.CopyBuffer(struct{ io.Writer }{c.Conn}, r, *buf)
}

// forward sends body to url and maps the answer to cardguard's own status:
//   - 2xx: nil; the client gets 204.
//   - network error, timeout, 5xx: 503, so Prometheus keeps the batch and retries.
//   - 429, and 401/403/404/407/408 (cardguard's credentials or URL are wrong, or
//     VictoriaMetrics is shedding load): 503 too, because the client's data is fine
//     and dropping it would lose samples nobody can send again.
//   - any other 4xx (VictoriaMetrics could not parse or accept the body): 400 with
//     its message; retrying would fail the same way.
func (f *forwarder) forward(ctx context.Context, url string, body []byte, userAgent string) error {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return errorf(http.StatusInternalServerError, "cannot build upstream request: %v", err)
	}
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	if userAgent != "" {
		req.Header.Set("User-Agent", userAgent)
	}
	if f.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+f.bearer)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		if errors.Is(err, context.Canceled) && ctx.Err() != nil && !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
			// The client went away; there is nobody to answer.
			return &statusError{status: 499, msg: "client closed the request before upstream answered"}
		}
		return &statusError{status: http.StatusServiceUnavailable, msg: "upstream unavailable: " + sanitize(err.Error())}
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	text := strings.TrimSpace(string(msg))
	switch code := resp.StatusCode; {
	case code >= 500, code == 429, code == 401, code == 403, code == 404, code == 407, code == 408:
		return &statusError{status: http.StatusServiceUnavailable, msg: fmt.Sprintf("upstream answered %d: %s", code, truncate(text, 512))}
	default:
		return &statusError{status: http.StatusBadRequest, msg: fmt.Sprintf("upstream rejected the request with %d: %s", code, truncate(text, 512))}
	}
}

// sanitize removes the URL's user info from transport errors before they reach a
// client or a log.
func sanitize(s string) string {
	if i := strings.Index(s, "://"); i >= 0 {
		if at := strings.IndexByte(s[i+3:], '@'); at >= 0 && !strings.ContainsAny(s[i+3:i+3+at], "/ ") {
			return s[:i+3] + "***@" + s[i+3+at+1:]
		}
	}
	return s
}
