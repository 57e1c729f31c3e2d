package ingest

import (
	"net/http"
	"unicode/utf8"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/cespare/xxhash/v2"
)

// validateSeries checks what the remote-write spec requires of one series and sorts
// its labels by name in place when a client sent them unsorted (VictoriaMetrics
// accepts that, so cardguard does too). It returns the metric name.
//
// Only the decoded copy is touched: when nothing else changes the request, the
// original bytes are forwarded as they came.
func validateSeries(labels []prompb.Label) (string, error) {
	if len(labels) == 0 {
		return "", errorf(http.StatusBadRequest, "invalid series: no labels")
	}
	sorted := true
	for i := range labels {
		l := &labels[i]
		if l.Name == "" {
			return "", errorf(http.StatusBadRequest, "invalid series %s: empty label name", seriesString(labels))
		}
		if !utf8.ValidString(l.Name) || !utf8.ValidString(l.Value) {
			return "", errorf(http.StatusBadRequest, "invalid series %s: label %q is not valid UTF-8", seriesString(labels), truncate(l.Name, 64))
		}
		if i > 0 && labels[i-1].Name >= l.Name {
			sorted = false
		}
	}
	if !sorted {
		sortLabels(labels)
		for i := 1; i < len(labels); i++ {
			if labels[i-1].Name == labels[i].Name {
				return "", errorf(http.StatusBadRequest, "invalid series %s: duplicate label name %q", seriesString(labels), truncate(labels[i].Name, 64))
			}
		}
	}
	name := metricName(labels)
	if name == "" {
		return "", errorf(http.StatusBadRequest, "invalid series %s: no __name__ label", seriesString(labels))
	}
	return name, nil
}

// sortIfNeeded sorts labels by name in place when a client sent them unsorted, so
// that the series hash does not depend on the order, and reports whether it did;
// it does not validate.
func sortIfNeeded(labels []prompb.Label) bool {
	for i := 1; i < len(labels); i++ {
		if labels[i-1].Name > labels[i].Name {
			sortLabels(labels)
			return true
		}
	}
	return false
}

// sortLabels is an insertion sort: label sets are short and it does not allocate.
func sortLabels(ls []prompb.Label) {
	for i := 1; i < len(ls); i++ {
		for j := i; j > 0 && ls[j].Name < ls[j-1].Name; j-- {
			ls[j], ls[j-1] = ls[j-1], ls[j]
		}
	}
}

func metricName(labels []prompb.Label) string {
	for i := range labels {
		if labels[i].Name == "__name__" {
			return labels[i].Value
		}
	}
	return ""
}

// hashLabels is the series identity every stage shares: xxhash over the sorted
// non-empty labels. A label with an empty value is the same as no label, as in
// Prometheus and VictoriaMetrics. The labels are copied into buf (reused across
// series) and hashed in one call, which is about twice as fast as feeding a
// digest four short writes per label.
func hashLabels(labels []prompb.Label, buf *[]byte) uint64 {
	*buf = appendSeriesBytes((*buf)[:0], labels)
	return xxhash.Sum64(*buf)
}

// appendSeriesBytes appends what the series hash is computed over to b: every
// label with a value, as name 0xff value 0xff.
func appendSeriesBytes(b []byte, labels []prompb.Label) []byte {
	for i := range labels {
		l := &labels[i]
		if l.Value == "" {
			continue
		}
		b = append(b, l.Name...)
		b = append(b, 0xff)
		b = append(b, l.Value...)
		b = append(b, 0xff)
	}
	return b
}

// seriesString renders a series for an error message, bounded in length.
func seriesString(labels []prompb.Label) string {
	s := prompb.LabelsToString(labels)
	return truncate(s, 256)
}
