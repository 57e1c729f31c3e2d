package ingest

import (
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/upstream"
)

// refusingSharing is a shared membership that refuses every series of metric
// refused, as a tenant at its limit would, and counts what it is asked.
type refusingSharing struct {
	mu    sync.Mutex
	calls int
	asked int
}

func (s *refusingSharing) AdmitShared(_ tenant.ID, _ *limits.Limits, _ int64, cands []limits.Candidate) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	s.asked += len(cands)
	for i := range cands {
		if cands[i].Metric == "refused" {
			cands[i].Reason = limits.ReasonMaxSeries
		}
	}
	return 0, nil
}

func (s *refusingSharing) Pending()            {}
func (s *refusingSharing) FailOpenFactor() int { return 1 }

// TestSharedAdmissionAfterTheLoop: the series a replica does not know are
// decided by the shared membership in one exchange per request, after the
// series loop; the refused ones leave the forwarded request (in dry run they
// stay and count as would-drop), and the admitted ones are known from the
// next request on, without asking again.
func TestSharedAdmissionAfterTheLoop(t *testing.T) {
	t.Parallel()
	for _, dry := range []bool{false, true} {
		up := newFakeUpstream(t)
		scheme, _ := upstream.New(upstream.Config{Mode: upstream.ModeSingle, URL: up.srv.URL, Timeout: 5 * time.Second})
		reg := prometheus.NewRegistry()
		logger := slog.New(slog.NewTextHandler(io.Discard, nil))
		def := limits.Default()
		def.MaxSeries = 1000
		if dry {
			def.Mode = limits.ModeDryRun
		}
		registry, _ := limits.NewRegistry(def, nil, nil, logger)
		enf := limits.NewEnforcer(limits.EnforcerOptions{Registerer: reg})
		share := &refusingSharing{}
		enf.ShareSeries(share)
		h := New(Config{}, scheme, Stages{Limits: registry, Enforcer: enf}, reg, logger)
		series := func(name, id string) prompb.TimeSeries {
			return prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: name}, {Name: "id", Value: id}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 1}, {Value: 2, Timestamp: 2}}}
		}
		wr := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{series("ok", "1"), series("refused", "1"), series("ok", "2"), series("refused", "2"), series("ok", "3")}}
		for round := range 2 {
			if rec := post(h, encode(wr), nil); rec.Code != 204 {
				t.Fatalf("dry=%v round %d: status %d %s", dry, round, rec.Code, rec.Body)
			}
			var wru prompb.WriteRequestUnmarshaler
			got, err := wru.UnmarshalProtobuf(mustDecode(up.bodies[round]))
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, ts := range got.Timeseries {
				for _, l := range ts.Labels {
					if l.Name == "id" {
						names = append(names, metricName(ts.Labels)+l.Value)
					}
				}
			}
			want := "[ok1 ok2 ok3]"
			if dry {
				want = "[ok1 refused1 ok2 refused2 ok3]"
			}
			if s := fmtList(names); s != want {
				t.Errorf("dry=%v round %d: forwarded %s; want %s", dry, round, s, want)
			}
		}
		// Round 1 asks about all 5; round 2 only about the 2 refused ones.
		if share.calls != 2 || share.asked != 7 {
			t.Errorf("dry=%v: %d exchanges about %d series; want 2 about 7", dry, share.calls, share.asked)
		}
		name := "cardguard_discarded_samples_total"
		if dry {
			name = "cardguard_dry_run_discarded_samples_total"
		}
		if n := counterValue(t, reg, name, map[string]string{"reason": "max_series"}); n != 8 {
			t.Errorf("dry=%v: %s{reason=max_series} = %v; want 8 (2 series x 2 samples x 2 rounds)", dry, name, n)
		}
	}
}

func fmtList(s []string) string {
	out := "["
	for i, v := range s {
		if i > 0 {
			out += " "
		}
		out += v
	}
	return out + "]"
}
