package adaptive

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cardguard/cardguard/internal/queryaudit"
	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/upstream"
)

// Estimate methods.
const (
	// MethodUpstream: VictoriaMetrics counted the series of the window before
	// and after removing the labels. Exact for what it stores, whatever the
	// labels' correlation.
	MethodUpstream = "upstream"
	// MethodSketch: the cardinality sketches, assuming the removed labels vary
	// independently of the kept ones (queryaudit.SavingsEstimate): an upper
	// bound when a removed label follows a kept one.
	MethodSketch = "sketch"
	// MethodSeriesUsage: the series of the last complete bucket that no
	// recorded selector selects (drop_series).
	MethodSeriesUsage = "series_usage"
)

// Estimate is the series a rule is expected to save, and how that was found.
type Estimate struct {
	Method string `json:"method"`
	Series int64  `json:"series"`
	After  int64  `json:"after"`
	Saved  int64  `json:"saved"`
	// Formula is what the sketches' independence formula says is saved, for
	// comparison.
	Formula int64  `json:"formula"`
	Detail  string `json:"detail,omitempty"`
}

// Counter asks the store, which holds the series, how many there are.
type Counter interface {
	// Count returns the series of metric in the window (those of one
	// segment only, unless sc is the whole metric), after removing the labels
	// in without (none: as stored).
	Count(ctx context.Context, t tenant.ID, metric string, sc Scope, without []string) (int64, error)
	// LabelValues returns the values of label on metric's series in the window.
	LabelValues(ctx context.Context, t tenant.ID, metric, label string) ([]string, error)
}

// Upstream is the Counter of the VictoriaMetrics behind cardguard, reached
// through cardguard's upstream scheme (tenant URLs, single node or cluster).
// It is safe for concurrent use.
type Upstream struct {
	scheme *upstream.Scheme
	client *http.Client
	window time.Duration

	mu    sync.Mutex
	reads map[ownRead]time.Time // see LastRead
}

type ownRead struct {
	t      tenant.ID
	metric string
}

// maxOwnReads bounds the reads Upstream remembers; past it, those older than
// an hour go, and if that is not enough, all of them. A read forgotten can only
// make a later poll of metric_names_stats look like a reader outside cardguard:
// a metric left alone, never one reduced.
const maxOwnReads = 100000

// LastRead implements OwnReads: when Count last read metric.
func (u *Upstream) LastRead(t tenant.ID, metric string) time.Time {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.reads[ownRead{t, metric}]
}

func (u *Upstream) noteRead(t tenant.ID, metric string, at time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.reads == nil {
		u.reads = make(map[ownRead]time.Time)
	}
	k := ownRead{t, metric}
	if _, ok := u.reads[k]; !ok && len(u.reads) >= maxOwnReads {
		for k, v := range u.reads {
			if at.Sub(v) > time.Hour {
				delete(u.reads, k)
			}
		}
		if len(u.reads) >= maxOwnReads {
			clear(u.reads)
		}
	}
	u.reads[k] = at
}

// minCountWindow floors the window counted: VictoriaMetrics makes samples
// searchable a second or two after they arrive, so a window of a few seconds
// may hold none of a metric's series.
const minCountWindow = time.Minute

// NewUpstream returns a Counter over the last window of series (at least a
// minute).
func NewUpstream(scheme *upstream.Scheme, window time.Duration, timeout time.Duration) *Upstream {
	return &Upstream{scheme: scheme, client: &http.Client{Timeout: timeout}, window: max(window, minCountWindow)}
}

var labelNameRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// selector is {__name__="metric"}, quoted for PromQL and MetricsQL.
func selector(metric string) string { return "{__name__=" + strconv.Quote(metric) + "}" }

// Count implements Counter with count(last_over_time(m[W])) and
// count(count without (labels) (last_over_time(m[W]))); for one segment the
// selector carries its matcher, {__name__="m",team="team-a"}.
func (u *Upstream) Count(ctx context.Context, t tenant.ID, metric string, sc Scope, without []string) (int64, error) {
	if !sc.whole() && !labelNameRE.MatchString(sc.Label) {
		return 0, fmt.Errorf("segment label %q cannot be named in a query", clip(sc.Label, 64))
	}
	inner := fmt.Sprintf("last_over_time(%s[%ds])", scopedSelector(metric, sc), max(int64(u.window/time.Second), 1))
	q := "count(" + inner + ")"
	if len(without) > 0 {
		for _, l := range without {
			if !labelNameRE.MatchString(l) {
				return 0, fmt.Errorf("label %q cannot be named in a query", clip(l, 64))
			}
		}
		q = "count(count without (" + strings.Join(without, ",") + ") (" + inner + "))"
	}
	// VictoriaMetrics counts this query as a read of metric in
	// metric_names_stats: remember it, so that it is not taken for a reader
	// outside cardguard (outside.go).
	u.noteRead(t, metric, time.Now())
	var resp struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := u.get(ctx, t, "api/v1/query", url.Values{"query": {q}}, &resp); err != nil {
		return 0, err
	}
	if len(resp.Data.Result) == 0 {
		return 0, nil
	}
	s, _ := resp.Data.Result[0].Value[1].(string)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: bad value %q", q, clip(s, 64))
	}
	return int64(f), nil
}

// LabelValues implements Counter with the label values API over the window.
func (u *Upstream) LabelValues(ctx context.Context, t tenant.ID, metric, label string) ([]string, error) {
	now := time.Now()
	var resp struct {
		Data []string `json:"data"`
	}
	args := url.Values{
		"match[]": {selector(metric)},
		"start":   {strconv.FormatInt(now.Add(-u.window).Unix(), 10)},
		"end":     {strconv.FormatInt(now.Unix(), 10)},
		"limit":   {"100"},
	}
	if err := u.get(ctx, t, "api/v1/label/"+url.PathEscape(label)+"/values", args, &resp); err != nil {
		return nil, err
	}
	return resp.Data, nil
}

func (u *Upstream) get(ctx context.Context, t tenant.ID, path string, args url.Values, dst any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.scheme.ReadURL(t, path, args).String(), nil)
	if err != nil {
		return err
	}
	if tok := u.scheme.BearerToken(); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := u.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("upstream %s: status %d: %s", path, resp.StatusCode, clip(string(body), 200))
	}
	return json.Unmarshal(body, dst)
}

// sketchEstimate is the fallback of the cardinality sketches.
func sketchEstimate(series int64, distinct map[string]int64, drop []string, why error) Estimate {
	saved := series
	if len(drop) > 0 {
		saved = queryaudit.SeriesSavedByDroppingLabels(series, distinct, drop)
	}
	e := Estimate{Method: MethodSketch, Series: series, After: series - saved, Saved: saved, Formula: saved,
		Detail: "cardinality sketches; assumes the removed labels vary independently of the kept ones, so it overstates the saving when a removed label follows a kept one"}
	if why != nil {
		e.Detail += "; the upstream could not count: " + clip(why.Error(), 200)
	}
	return e
}

// upstreamEstimate asks c; the error says why it could not.
func upstreamEstimate(ctx context.Context, c Counter, t tenant.ID, metric string, sc Scope, drop []string, dropMetric bool) (Estimate, error) {
	if c == nil {
		return Estimate{}, errors.New("no upstream counter")
	}
	before, err := c.Count(ctx, t, metric, sc, nil)
	if err != nil {
		return Estimate{}, err
	}
	if before == 0 {
		if !sc.whole() {
			return Estimate{}, fmt.Errorf("the upstream holds no series of the metric with %s in the window", sc)
		}
		return Estimate{}, errors.New("the upstream holds no series of the metric in the window")
	}
	after := int64(0)
	if !dropMetric {
		if after, err = c.Count(ctx, t, metric, sc, drop); err != nil {
			return Estimate{}, err
		}
	}
	return Estimate{Method: MethodUpstream, Series: before, After: after, Saved: before - after,
		Detail: "VictoriaMetrics counted the metric's series of the cardinality window, before and after removing the labels"}, nil
}
