package ingest

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// statusError is an outcome with the HTTP status that tells a remote-write client
// what to do with its batch: 4xx drop it, 429 and 5xx retry it.
type statusError struct {
	status     int
	msg        string
	retryAfter time.Duration
}

func (e *statusError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &statusError{status: status, msg: fmt.Sprintf(format, args...)}
}

// statusOf maps any error to its HTTP status: one place decides.
func statusOf(err error) int {
	var se *statusError
	if errors.As(err, &se) {
		return se.status
	}
	return http.StatusInternalServerError
}

// writeError answers err. The body is one line of plain text, which Prometheus
// copies into its log when it drops or retries the batch.
func writeError(w http.ResponseWriter, err error) int {
	status := statusOf(err)
	var se *statusError
	if errors.As(err, &se) && se.retryAfter > 0 {
		secs := int(se.retryAfter.Round(time.Second) / time.Second)
		if secs < 1 {
			secs = 1
		}
		w.Header().Set("Retry-After", strconv.Itoa(secs))
	}
	http.Error(w, err.Error(), status)
	return status
}

func truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
