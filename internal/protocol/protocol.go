// Package protocol decodes the ways data enters VictoriaMetrics other than
// remote write (OTLP, the import formats, Influx line protocol, Datadog, New
// Relic, OpenTSDB) into the series of cardguard's pipeline (ingest.Builder),
// with VictoriaMetrics' own parsers (lib/protoparser) and the same translation
// its vminsert applies, so that what is stored through cardguard is what
// VictoriaMetrics would have stored. Each protocol is one file, and answers its
// senders the way their clients expect.
//
// The stream readers of lib/protoparser are not used: they bring global
// concurrency limits and flags; the plain parse functions are, over the whole
// body that ingest has read and bounded.
package protocol

import (
	"bytes"
	"net/http"
	"strconv"
	"time"

	"github.com/cardguard/cardguard/internal/ingest"
)

// answer is the answer of the protocols that have no body to give on success
// beyond a fixed one: code with body (and its content type) when nothing
// failed, cardguard's one-line error otherwise. Samples dropped on purpose are
// told in X-Cardguard-Rejected-Samples (and, as for remote write, in
// cardguard_discarded_samples_total).
func answer(w http.ResponseWriter, o ingest.Outcome, code int, contentType, body string) int {
	if o.Err != nil {
		return ingest.WriteError(w, o.Err)
	}
	if o.Rejected > 0 {
		w.Header().Set("X-Cardguard-Rejected-Samples", strconv.Itoa(o.Rejected))
	}
	if contentType != "" {
		w.Header().Set("Content-Type", contentType)
	}
	w.WriteHeader(code)
	if body != "" {
		_, _ = w.Write([]byte(body))
	}
	return code
}

// retryAfter is the Retry-After of an answer that asks the sender to retry:
// the outcome's own, else a second.
func retryAfter(o ingest.Outcome) string {
	d := o.RetryAfter()
	if d < time.Second {
		d = time.Second
	}
	return strconv.Itoa(int(d.Round(time.Second) / time.Second))
}

// lines calls f with body cut into pieces of about chunkSize bytes that end at
// a line end, so that a parser's rows never hold more than one piece's worth:
// that is what VictoriaMetrics' stream readers do, and what bounds a parser's
// memory whatever the size of the body. f gets strings that point into body.
func lines(body []byte, f func(chunk string, first bool) error) error {
	first := true
	for len(body) > 0 {
		n := min(chunkSize, len(body))
		if n < len(body) {
			// Extend to the end of the line the piece ends in.
			if i := bytes.IndexByte(body[n:], '\n'); i >= 0 {
				n += i + 1
			} else {
				n = len(body)
			}
		}
		if err := f(bytesString(body[:n]), first); err != nil {
			return err
		}
		first = false
		body = body[n:]
	}
	return nil
}

const chunkSize = 64 << 10
