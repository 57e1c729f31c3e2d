package ingest

import (
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardguard/cardguard/internal/aggregate"
	"github.com/cardguard/cardguard/internal/guard"
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

// admitFirst is a shared membership that admits the first n series it is
// asked about and refuses the others, as a tenant reaching its limit would.
type admitFirst struct {
	mu sync.Mutex
	n  int
}

func (s *admitFirst) AdmitShared(_ tenant.ID, _ *limits.Limits, _ int64, cands []limits.Candidate) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range cands {
		if s.n > 0 {
			s.n--
			continue
		}
		cands[i].Reason = limits.ReasonMaxSeries
	}
	return 0, nil
}

func (s *admitFirst) Pending()            {}
func (s *admitFirst) FailOpenFactor() int { return 1 }

// TestSharedAdmissionRefusesFolds: series the label guard folds into an
// aggregate are decided after the loop too; refused ones must leave the
// aggregate, or it would count inputs that were never admitted.
func TestSharedAdmissionRefusesFolds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		admit      int
		wantInputs int // 0: no aggregate at all
	}{{admit: 3, wantInputs: 2}, {admit: 1, wantInputs: 0}} {
		up := newFakeUpstream(t)
		scheme, _ := upstream.New(upstream.Config{Mode: upstream.ModeCluster, InsertURL: up.srv.URL, SelectURL: up.srv.URL, Timeout: 5 * time.Second})
		logger := slog.New(slog.NewTextHandler(io.Discard, nil))
		def := limits.Default()
		def.MaxSeries = 1000
		def.LabelGuard.MaxValuesPerLabel = 1
		registry, _ := limits.NewRegistry(def, nil, nil, logger)
		aggCfg := aggregate.Config{}
		if err := aggCfg.Validate(); err != nil {
			t.Fatal(err)
		}
		folds := aggregate.New(aggCfg, nil, nil)
		enf := limits.NewEnforcer(limits.EnforcerOptions{})
		enf.ShareSeries(&admitFirst{n: tc.admit})
		h := New(Config{}, scheme, Stages{Guard: guard.New(guard.Options{}), Limits: registry, Enforcer: enf, Folder: folds}, prometheus.NewRegistry(), logger)
		wr := &prompb.WriteRequest{}
		for _, u := range []string{"a", "b", "c"} {
			wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
				Labels:  []prompb.Label{{Name: "__name__", Value: "jobs_total"}, {Name: "user", Value: u}},
				Samples: []prompb.Sample{{Value: 5, Timestamp: time.Now().UnixMilli()}},
			})
		}
		if rec := post(h, encode(wr), nil); rec.Code != 204 {
			t.Fatalf("admit %d: status %d %s", tc.admit, rec.Code, rec.Body)
		}
		got := folds.Snapshot(tenant.MustParse("1"), "jobs_total", 10)
		inputs := 0
		for _, a := range got {
			inputs += a.Inputs
		}
		if inputs != tc.wantInputs {
			t.Errorf("admit %d of 3 (user a forwarded, b and c folded by the guard): aggregates %+v; want %d inputs", tc.admit, got, tc.wantInputs)
		}
	}
}
