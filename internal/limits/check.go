package limits

import "github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

// CheckLabels returns the label limit of l the series breaks, or "" when it breaks
// none: max_labels_per_series first, then the name or value length of the first label
// that is too long. Lengths are in bytes, as VictoriaMetrics counts them.
// It is pure, never allocates and keeps nothing.
func CheckLabels(l *Limits, labels []prompb.Label) Reason {
	if l.MaxLabelsPerSeries > 0 && len(labels) > l.MaxLabelsPerSeries {
		return ReasonMaxLabelsPerSeries
	}
	maxName, maxValue := l.MaxLabelNameLength, l.MaxLabelValueLength
	if maxName <= 0 && maxValue <= 0 {
		return ""
	}
	if maxName <= 0 {
		maxName = int(^uint(0) >> 1)
	}
	if maxValue <= 0 {
		maxValue = int(^uint(0) >> 1)
	}
	for i := range labels {
		lb := &labels[i]
		if len(lb.Name) > maxName {
			return ReasonMaxLabelNameLength
		}
		if len(lb.Value) > maxValue {
			return ReasonMaxLabelValueLength
		}
	}
	return ""
}
