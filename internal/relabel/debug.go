package relabel

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// Step is the outcome of one rule in Debug.
type Step struct {
	// Rule is the index of the rule in the list.
	Rule   int
	Action Action
	// Labels is the label set after the rule; empty when Dropped.
	Labels []prompb.Label
	// Changed reports whether this rule changed the label set.
	Changed bool
	// Dropped reports whether this rule dropped the series; no step follows.
	Dropped bool
	// Err is set when the rule does not compile; no step follows.
	Err error
}

// Debug applies rules one at a time to labels (sorted by name) and returns the
// label set after each rule, stopping after a drop or a rule that does not
// compile. It is meant for humans, not the hot path. The result does not share
// memory with labels.
func Debug(rules []Config, labels []prompb.Label) []Step {
	cur := append([]prompb.Label(nil), labels...)
	steps := make([]Step, 0, len(rules))
	for i := range rules {
		st := Step{Rule: i, Action: rules[i].Action}
		r, err := Compile(rules[i : i+1])
		if err != nil {
			st.Err = err
			steps = append(steps, st)
			break
		}
		out, keep, changed := r.Apply(cur, nil)
		st.Changed = changed
		if !keep {
			st.Dropped = true
			steps = append(steps, st)
			break
		}
		if changed {
			cur = out
		}
		st.Labels = append([]prompb.Label(nil), cur...)
		steps = append(steps, st)
	}
	return steps
}

// maxDebugBody bounds the debug request body.
const maxDebugBody = 1 << 20

type debugRequest struct {
	Rules  string `json:"rules"`
	Series string `json:"series"`
}

type debugStep struct {
	Rule    int               `json:"rule"`
	Action  Action            `json:"action"`
	Series  string            `json:"series,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	Changed bool              `json:"changed"`
	Dropped bool              `json:"dropped"`
}

type debugResponse struct {
	Input  debugStep   `json:"input"`
	Steps  []debugStep `json:"steps"`
	Output *debugStep  `json:"output"`
	Kept   bool        `json:"kept"`
}

// DebugHandler answers POST {"rules": "<YAML list of rules>", "series":
// "metric{a=\"b\"}"} with the label set after each rule as JSON. Bad JSON, YAML
// or series get a 400 that says what is wrong. It keeps no state and is safe for
// concurrent use.
func DebugHandler() http.Handler {
	p := parser.NewParser(parser.Options{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "method not allowed: use POST", http.StatusMethodNotAllowed)
			return
		}
		var req debugRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxDebugBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				http.Error(w, fmt.Sprintf("request body larger than %d bytes", maxDebugBody), http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, "bad request body: want JSON {\"rules\": \"<yaml>\", \"series\": \"metric{a=\\\"b\\\"}\"}: "+err.Error(), http.StatusBadRequest)
			return
		}
		cfgs, err := ParseConfigs([]byte(req.Rules))
		if err != nil {
			http.Error(w, "bad rules: "+err.Error(), http.StatusBadRequest)
			return
		}
		if strings.TrimSpace(req.Series) == "" {
			http.Error(w, "bad series: empty; want e.g. metric{a=\"b\"}", http.StatusBadRequest)
			return
		}
		ls, err := p.ParseMetric(req.Series)
		if err != nil {
			http.Error(w, "bad series "+strconv.Quote(truncate(req.Series))+": "+err.Error(), http.StatusBadRequest)
			return
		}
		in := fromLabels(ls)
		resp := debugResponse{Input: toDebugStep(-1, "", in, false, false), Steps: []debugStep{}, Kept: true}
		out := in
		for _, st := range Debug(cfgs, in) {
			if st.Err != nil {
				// ParseConfigs validated every rule, so this is not expected.
				http.Error(w, "bad rules: "+st.Err.Error(), http.StatusBadRequest)
				return
			}
			resp.Steps = append(resp.Steps, toDebugStep(st.Rule, st.Action, st.Labels, st.Changed, st.Dropped))
			if st.Dropped {
				resp.Kept = false
			}
			out = st.Labels
		}
		if resp.Kept {
			o := toDebugStep(-1, "", out, !equal(out, in), false)
			resp.Output = &o
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(resp)
	})
}

func fromLabels(ls labels.Labels) []prompb.Label {
	out := make([]prompb.Label, 0, ls.Len())
	ls.Range(func(l labels.Label) {
		out = append(out, prompb.Label{Name: l.Name, Value: l.Value})
	})
	return out
}

func toDebugStep(rule int, a Action, ls []prompb.Label, changed, dropped bool) debugStep {
	st := debugStep{Rule: rule, Action: a, Changed: changed, Dropped: dropped}
	if dropped {
		return st
	}
	st.Labels = make(map[string]string, len(ls))
	b := labels.NewScratchBuilder(len(ls))
	for _, l := range ls {
		st.Labels[l.Name] = l.Value
		b.Add(l.Name, l.Value)
	}
	st.Series = b.Labels().String()
	return st
}
