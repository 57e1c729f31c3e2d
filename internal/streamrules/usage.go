package streamrules

import (
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/VictoriaMetrics/VictoriaMetrics/lib/promrelabel"
	"github.com/VictoriaMetrics/VictoriaMetrics/lib/streamaggr"
	"github.com/cespare/xxhash/v2"
	"gopkg.in/yaml.v2"
)

// ruleView is what usage counting needs of one rule: which series it takes and
// which output each becomes.
type ruleView struct {
	name     string // the rule's name, or its position
	match    *promrelabel.IfExpression
	by       []string // with __name__ added, as vmagent does
	without  []string
	interval string
	outputs  []string
}

// ruleViews reads a compiled list the way lib/streamaggr does.
func ruleViews(src []byte) ([]ruleView, error) {
	var cfgs []*streamaggr.Config
	if err := yaml.UnmarshalStrict(src, &cfgs); err != nil {
		return nil, err
	}
	out := make([]ruleView, len(cfgs))
	for i, c := range cfgs {
		v := ruleView{name: c.Name, match: c.Match, interval: c.Interval, outputs: c.Outputs,
			by: slices.Clone(c.By), without: slices.Clone(c.Without)}
		if v.name == "" {
			v.name = "#" + strconv.Itoa(i+1)
		}
		if len(v.by) > 0 && !slices.Contains(v.by, "__name__") {
			v.by = append(v.by, "__name__")
		}
		out[i] = v
	}
	return out, nil
}

// maxUsageSeries bounds the input series whose use by rules one tenant's
// instance counts in a window; past it, counts are lower bounds (Incomplete).
const maxUsageSeries = 200_000

// usage counts, per rule and metric, the distinct input series a rule takes
// and the output series they become, in the current window. Safe for
// concurrent use.
type usage struct {
	window time.Duration

	mu   sync.Mutex
	gen  int64
	n    int
	full bool
	dry  bool // the last series observed were in dry run
	m    map[usageKey]*usageCounts
}

type usageKey struct {
	rule   int
	metric string
}

type usageCounts struct {
	inputs, outputs map[uint64]struct{}
}

func newUsage(window time.Duration) *usage {
	return &usage{window: window, m: map[usageKey]*usageCounts{}}
}

// observe counts the series of tss that each rule matches (dry: would
// take). Label strings are copied only for a metric seen for the first time in
// the window.
func (u *usage) observe(rules []ruleView, tss []prompb.TimeSeries, now time.Time, dry bool) {
	gen := now.UnixNano() / int64(u.window)
	var buf []byte
	u.mu.Lock()
	defer u.mu.Unlock()
	if gen != u.gen || dry != u.dry {
		// A tenant that moved in or out of dry run starts counting again.
		u.gen, u.n, u.full, u.dry = gen, 0, false, dry
		clear(u.m)
	}
	for i := range tss {
		ls := tss[i].Labels
		var in uint64
		for ri := range rules {
			r := &rules[ri]
			if r.match != nil && !r.match.Match(ls) {
				continue
			}
			if in == 0 {
				buf = appendLabels(buf[:0], ls, nil, nil)
				in = xxhash.Sum64(buf)
			}
			buf = appendLabels(buf[:0], ls, r.by, r.without)
			out := xxhash.Sum64(buf)
			k := usageKey{rule: ri, metric: metricOf(ls)}
			c := u.m[k]
			if c == nil {
				if u.n >= maxUsageSeries {
					u.full = true
					continue
				}
				k.metric = string([]byte(k.metric))
				c = &usageCounts{inputs: map[uint64]struct{}{}, outputs: map[uint64]struct{}{}}
				u.m[k] = c
			}
			if _, ok := c.inputs[in]; !ok {
				if u.n >= maxUsageSeries {
					u.full = true
					continue
				}
				u.n++
				c.inputs[in] = struct{}{}
			}
			c.outputs[out] = struct{}{}
		}
	}
}

// appendLabels appends what identifies a series' output: with by, only those
// labels; with without, all but those; with neither, all (aggregation over time
// only).
func appendLabels(dst []byte, ls []prompb.Label, by, without []string) []byte {
	for _, l := range ls {
		if (len(by) > 0 && !slices.Contains(by, l.Name)) || slices.Contains(without, l.Name) {
			continue
		}
		dst = append(dst, l.Name...)
		dst = append(dst, 0xff)
		dst = append(dst, l.Value...)
		dst = append(dst, 0xff)
	}
	return dst
}

func metricOf(ls []prompb.Label) string {
	for _, l := range ls {
		if l.Name == "__name__" {
			return l.Value
		}
	}
	return ""
}

// RuleUsage is one rule's use on one metric in the current window.
type RuleUsage struct {
	Rule     string   `json:"rule"`
	Interval string   `json:"interval"`
	Outputs  []string `json:"outputs"`
	Metric   string   `json:"metric"`
	// InputSeries are taken by the rule (in dry run: would be) and become
	// OutputSeries.
	InputSeries  int  `json:"input_series"`
	OutputSeries int  `json:"output_series"`
	DryRun       bool `json:"dry_run"`
	// Incomplete: the count hit its cap and is a lower bound.
	Incomplete bool `json:"incomplete"`
}

func (u *usage) list(rules []ruleView, metric string, now time.Time) []RuleUsage {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.gen != now.UnixNano()/int64(u.window) {
		return nil
	}
	var out []RuleUsage
	for k, c := range u.m {
		if (metric != "" && k.metric != metric) || k.rule >= len(rules) {
			continue
		}
		r := rules[k.rule]
		out = append(out, RuleUsage{Rule: r.name, Interval: r.interval, Outputs: r.outputs, Metric: k.metric,
			InputSeries: len(c.inputs), OutputSeries: len(c.outputs), DryRun: u.dry, Incomplete: u.full})
	}
	slices.SortFunc(out, func(a, b RuleUsage) int {
		if a.InputSeries != b.InputSeries {
			return b.InputSeries - a.InputSeries
		}
		if a.Metric != b.Metric {
			if a.Metric < b.Metric {
				return -1
			}
			return 1
		}
		if a.Rule < b.Rule {
			return -1
		}
		return 1
	})
	return out
}
