package workload

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"slices"
	"strings"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/protobuf/proto"
)

// otlpEncoder makes the OTLP form of the same series: an
// ExportMetricsServiceRequest per request, with one resource and one scope
// (neither with attributes, so that VictoriaMetrics' translation adds no label),
// each metric of the request once with a data point per series, and the series'
// labels as the points' attributes. Even metrics are monotonic cumulative sums
// with integer points, named as in remote write (loadgen_m0000_total); odd ones
// are gauges with double points, named without _total (loadgen_m0001). A
// series then has the labels, timestamp and value it has over remote write, and
// VictoriaMetrics stores one sample per point.
//
// The body is compressed with compress/gzip at its default level, as the
// Collector's otlphttp exporter does by default.
type otlpEncoder struct {
	w      Workload
	names  []string
	gens   [][]uint32
	lbs    []prompb.Label
	series []int
	buf    bytes.Buffer
	gz     *gzip.Writer
}

// otlpSum says whether metric m is sent as a sum; the others are gauges.
func otlpSum(m int) bool { return m%2 == 0 }

// OTLPName is the name metric m has in the OTLP form of a workload, and so in
// VictoriaMetrics, which keeps OTLP names as sent by default.
func OTLPName(m int) string {
	name := metricName(m)
	if otlpSum(m) {
		return name
	}
	return strings.TrimSuffix(name, "_total")
}

func (e *otlpEncoder) encode(series []int, round int) (int, []byte, error) {
	w := e.w
	// A metric's points travel together in OTLP: group the request's series by
	// metric, keeping their order within each.
	e.series = append(e.series[:0], series...)
	slices.SortStableFunc(e.series, func(a, b int) int { return a/w.SeriesPerMetric - b/w.SeriesPerMetric })

	tsNano := uint64(w.timestamp(round)) * 1e6
	startNano := uint64(w.Start-w.Interval.Milliseconds()) * 1e6
	var metrics []*metricspb.Metric
	for lo := 0; lo < len(e.series); {
		m := e.series[lo] / w.SeriesPerMetric
		hi := lo + 1
		for hi < len(e.series) && e.series[hi]/w.SeriesPerMetric == m {
			hi++
		}
		points := make([]*metricspb.NumberDataPoint, hi-lo)
		for k, i := range e.series[lo:hi] {
			e.lbs = appendSeriesLabels(e.lbs[:0], e.names, w, i, e.gens[round][i])
			attrs := make([]*commonpb.KeyValue, 0, len(e.lbs)-1)
			for _, l := range e.lbs {
				if l.Name == "__name__" {
					continue
				}
				attrs = append(attrs, &commonpb.KeyValue{Key: l.Name, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: l.Value}}})
			}
			p := &metricspb.NumberDataPoint{Attributes: attrs, TimeUnixNano: tsNano}
			if otlpSum(m) {
				p.StartTimeUnixNano = startNano
				p.Value = &metricspb.NumberDataPoint_AsInt{AsInt: int64(value(round, i))}
			} else {
				p.Value = &metricspb.NumberDataPoint_AsDouble{AsDouble: value(round, i)}
			}
			points[k] = p
		}
		metric := &metricspb.Metric{Name: OTLPName(m)}
		if otlpSum(m) {
			metric.Data = &metricspb.Metric_Sum{Sum: &metricspb.Sum{
				DataPoints:             points,
				AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE,
				IsMonotonic:            true,
			}}
		} else {
			metric.Data = &metricspb.Metric_Gauge{Gauge: &metricspb.Gauge{DataPoints: points}}
		}
		metrics = append(metrics, metric)
		lo = hi
	}
	req := &colmetricspb.ExportMetricsServiceRequest{ResourceMetrics: []*metricspb.ResourceMetrics{{
		Resource:     &resourcepb.Resource{},
		ScopeMetrics: []*metricspb.ScopeMetrics{{Metrics: metrics}},
	}}}
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(req)
	if err != nil {
		return 0, nil, fmt.Errorf("cannot marshal ExportMetricsServiceRequest: %w", err)
	}
	e.buf.Reset()
	if e.gz == nil {
		e.gz = gzip.NewWriter(&e.buf)
	} else {
		e.gz.Reset(&e.buf)
	}
	if _, err := e.gz.Write(raw); err != nil {
		return 0, nil, err
	}
	if err := e.gz.Close(); err != nil {
		return 0, nil, err
	}
	return len(raw), bytes.Clone(e.buf.Bytes()), nil
}
