package readpath

import (
	"bytes"
	"compress/gzip"
	"io"
	"strconv"
	"sync"
)

// VictoriaMetrics ends each query and query_range answer with its own cost figures:
//
//	..."stats":{"seriesFetched": "1234","executionTimeMsec":56}}
//
// statsBody reads them off the answer while it streams to the client, without
// holding more than the last tailSize bytes: the stats object is the answer's last
// member. Gzip answers (VictoriaMetrics compresses when the client accepts it) are
// decompressed on the side, as they pass, by one goroutine per answer.

// tailSize is how much of the end of an answer is kept: the stats object is ~60 bytes.
const tailSize = 256

// upstreamStats are VictoriaMetrics' figures for one answer; -1 when absent.
type upstreamStats struct {
	seriesFetched int64
	execMsec      int64
}

// tail keeps the last tailSize bytes written to it.
type tail struct {
	buf [2 * tailSize]byte
	n   int
}

func (t *tail) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= tailSize {
		copy(t.buf[:], p[len(p)-tailSize:])
		t.n = tailSize
		return n, nil
	}
	if t.n+len(p) > len(t.buf) {
		keep := tailSize - len(p)
		copy(t.buf[:], t.buf[t.n-keep:t.n])
		t.n = keep
	}
	t.n += copy(t.buf[t.n:], p)
	return n, nil
}

// stats parses the figures from the end of an answer.
func (t *tail) stats() upstreamStats {
	s := upstreamStats{seriesFetched: -1, execMsec: -1}
	b := t.buf[:t.n]
	i := bytes.LastIndex(b, []byte(`"stats":`))
	if i < 0 {
		return s
	}
	b = b[i:]
	s.seriesFetched = numberAfter(b, `"seriesFetched":`)
	s.execMsec = numberAfter(b, `"executionTimeMsec":`)
	return s
}

// numberAfter reads the integer after key, quoted or not; -1 when there is none.
func numberAfter(b []byte, key string) int64 {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return -1
	}
	b = bytes.TrimLeft(b[i+len(key):], " \t\r\n\"")
	j := 0
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	n, err := strconv.ParseInt(string(b[:j]), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// statsBody wraps an upstream answer's body: what the reverse proxy reads from it
// also goes to the tail, through a gzip reader on its own goroutine when the answer
// is compressed.
type statsBody struct {
	rc   io.ReadCloser
	t    tail
	pw   *io.PipeWriter // nil: identity encoding
	done chan struct{}  // closed when the gzip goroutine is done
	once sync.Once
}

func newStatsBody(rc io.ReadCloser, gzipped bool) *statsBody {
	s := &statsBody{rc: rc}
	if gzipped {
		pr, pw := io.Pipe()
		s.pw, s.done = pw, make(chan struct{})
		go func() {
			defer close(s.done)
			zr, err := gzip.NewReader(pr)
			if err == nil {
				_, err = io.Copy(&s.t, zr)
			}
			if err != nil {
				s.t.n = 0 // no figures rather than wrong ones
			}
			_, _ = io.Copy(io.Discard, pr) // never leave the writer blocked
		}()
	}
	return s
}

func (s *statsBody) Read(p []byte) (int, error) {
	n, err := s.rc.Read(p)
	if n > 0 {
		if s.pw != nil {
			_, _ = s.pw.Write(p[:n])
		} else {
			_, _ = s.t.Write(p[:n])
		}
	}
	return n, err
}

func (s *statsBody) Close() error {
	err := s.rc.Close()
	s.finish()
	return err
}

func (s *statsBody) finish() {
	s.once.Do(func() {
		if s.pw != nil {
			_ = s.pw.Close()
			<-s.done
		}
	})
}

// stats returns the figures once the body has been read and closed.
func (s *statsBody) stats() upstreamStats {
	s.finish()
	return s.t.stats()
}
