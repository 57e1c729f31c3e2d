package relabel

import (
	"strings"
	"testing"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
)

func TestParseConfigsErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, yaml, wantErr string
	}{
		{"unknown key", `- {source_labels: [a], target_lable: b}`, `unknown field "target_lable"`},
		{"duplicate key", "- action: drop\n  action: keep", `duplicate key "action"`},
		{"unknown action", `- {action: explode}`, `unknown relabel action "explode"`},
		{"empty action", `- {action: ""}`, `relabel action cannot be empty`},
		{"bad regex", `- {regex: '(', target_label: a}`, `invalid regex "("`},
		{"hashmod without modulus", `- {source_labels: [a], target_label: b, action: hashmod}`, `requires non-zero modulus`},
		{"replace without target", `- {source_labels: [a]}`, `requires 'target_label'`},
		{"lowercase with replacement", `- {source_labels: [a], target_label: b, replacement: x, action: lowercase}`, `'replacement' can not be set`},
		{"keepequal with regex", `- {source_labels: [a], target_label: b, regex: x, action: keepequal}`, `requires only 'source_labels' and 'target_label'`},
		{"keepequal with separator", `- {source_labels: [a], target_label: b, separator: x, action: keepequal}`, `requires only 'source_labels' and 'target_label'`},
		{"labeldrop with source", `- {source_labels: [a], regex: x, action: labeldrop}`, `requires only 'regex'`},
		{"labelkeep with target", `- {target_label: a, regex: x, action: labelkeep}`, `requires only 'regex'`},
		{"labelmap empty replacement", `- {regex: x, replacement: '', action: labelmap}`, `invalid 'replacement'`},
		{"drop_metrics without regex", `- {action: drop_metrics}`, `requires 'regex' or 'if'`},
		{"keep_metrics with source", `- {action: keep_metrics, regex: x, source_labels: [a]}`, `'source_labels' must be empty`},
		{"bad if", `- {if: 'foo{', action: drop}`, `invalid 'if' selector`},
		{"if not a string", `- {if: {a: b}, action: drop}`, `if must be a string or a list`},
		{"source_labels scalar", `- {source_labels: a, target_label: b}`, `source_labels must be a list`},
		{"rule not mapping", `- drop`, `must be a mapping`},
		{"not a list", `action: drop`, `cannot unmarshal`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseConfigs([]byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseConfigsDefaults(t *testing.T) {
	t.Parallel()
	cfgs, err := ParseConfigs([]byte("- target_label: a\n- action: DROP_METRICS\n  regex: [foo, bar]\n- action: keep\n  if: ['up', 'x{a=\"b\"}']\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.TargetLabel = "a"
	if got := cfgs[0]; got.Separator != want.Separator || got.Regex != want.Regex || got.Replacement != want.Replacement || got.Action != want.Action || got.TargetLabel != "a" {
		t.Errorf("defaults: got %+v, want %+v", got, want)
	}
	if cfgs[1].Action != DropMetrics || cfgs[1].Regex != "foo|bar" {
		t.Errorf("list regex: got %+v", cfgs[1])
	}
	if len(cfgs[2].If) != 2 {
		t.Errorf("if list: got %+v", cfgs[2])
	}
	if cfgs, err := ParseConfigs(nil); err != nil || cfgs != nil {
		t.Errorf("empty input: %v, %v", cfgs, err)
	}
}

func TestVictoriaMetricsExtensions(t *testing.T) {
	t.Parallel()
	reqs := lbls("__name__", "http_requests_total", "job", "api", "path", "/a")
	up := lbls("__name__", "up", "job", "node")
	tests := []struct {
		name     string
		rules    string
		in       []prompb.Label
		wantKeep bool
		want     []prompb.Label
	}{
		{"drop_metrics match", `- {action: drop_metrics, regex: 'http_.*'}`, reqs, false, nil},
		{"drop_metrics no match", `- {action: drop_metrics, regex: 'http_'}`, reqs, true, reqs},
		{"keep_metrics match", `- {action: keep_metrics, regex: 'up|foo'}`, up, true, up},
		{"keep_metrics no match", `- {action: keep_metrics, regex: 'up|foo'}`, reqs, false, nil},
		{"if limits replace", `- {if: 'up', target_label: x, replacement: y}`, reqs, true, reqs},
		{"if applies replace", `- {if: 'up', target_label: x, replacement: y}`, up, true, lbls("__name__", "up", "job", "node", "x", "y")},
		{"if with matchers", `- {if: '{job=~"a.*", path!=""}', action: labeldrop, regex: path}`, reqs, true, lbls("__name__", "http_requests_total", "job", "api")},
		{"if list any", `- {if: ['nope', '{job="node"}'], action: drop}`, up, false, nil},
		{"drop with if only", `- {if: 'up', action: drop}`, up, false, nil},
		{"drop with if mismatch", `- {if: 'up', action: drop}`, reqs, true, reqs},
		{"keep with if mismatch drops", `- {if: 'up', action: keep}`, reqs, false, nil},
		{"keep with if match keeps", `- {if: 'up', action: keep}`, up, true, up},
		{"keep_metrics with if only", `- {if: '{job="node"}', action: keep_metrics}`, reqs, false, nil},
		{"if absent label matches empty", `- {if: '{missing=""}', target_label: x, replacement: y}`, up, true, lbls("__name__", "up", "job", "node", "x", "y")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rules := mustRules(t, tt.rules)
			out, keep, changed := rules.Apply(tt.in, nil)
			if keep != tt.wantKeep {
				t.Fatalf("keep = %v, want %v", keep, tt.wantKeep)
			}
			if !keep {
				if !changed || len(out) != 0 {
					t.Fatalf("dropped series: out %v changed %v, want empty and true", out, changed)
				}
				return
			}
			if !equal(out, tt.want) {
				t.Fatalf("got %v, want %v", out, tt.want)
			}
			if changed != !equal(tt.in, tt.want) {
				t.Fatalf("changed = %v", changed)
			}
		})
	}
}

func TestApplyReusesBuf(t *testing.T) {
	t.Parallel()
	rules := mustRules(t, `- {target_label: env, replacement: prod}`)
	in := lbls("__name__", "up", "job", "a")
	buf := make([]prompb.Label, 0, 8)
	out, keep, changed := rules.Apply(in, buf)
	if !keep || !changed {
		t.Fatalf("keep %v changed %v", keep, changed)
	}
	if &out[:1][0] != &buf[:1][0] {
		t.Fatalf("out does not use buf")
	}
	// Unchanged: the input comes back as is.
	in2 := lbls("__name__", "up", "env", "prod")
	out2, keep, changed := rules.Apply(in2, out[:0])
	if !keep || changed || &out2[0] != &in2[0] {
		t.Fatalf("unchanged series: keep %v changed %v", keep, changed)
	}
	var nilRules *Rules
	if out, keep, changed := nilRules.Apply(in, nil); !keep || changed || &out[0] != &in[0] {
		t.Fatalf("nil rules changed the series")
	}
}

func TestApplyDoesNotRetainScratch(t *testing.T) {
	t.Parallel()
	// Values built from several source labels live in pooled scratch memory
	// while the rules run; what ends up in out must be independent of it.
	rules := mustRules(t, `
- {source_labels: [a, b], separator: '-', target_label: ab}
- {source_labels: [a, b], target_label: lc, action: lowercase}
- {source_labels: [a], regex: '(.*)', target_label: 'n_$1', replacement: 'v'}
`)
	out1, _, _ := rules.Apply(lbls("__name__", "m", "a", "x", "b", "y"), nil)
	out1 = append([]prompb.Label(nil), out1...)
	snapshot := append([]prompb.Label(nil), out1...)
	for range 10 {
		rules.Apply(lbls("__name__", "m", "a", "QQ", "b", "ZZ"), nil)
	}
	if !equal(out1, snapshot) {
		t.Fatalf("output changed after later calls: %v, was %v", out1, snapshot)
	}
	want := lbls("__name__", "m", "a", "x", "ab", "x-y", "b", "y", "lc", "x;y", "n_x", "v")
	if !equal(out1, want) {
		t.Fatalf("got %v, want %v", out1, want)
	}
}

func TestApplyZeroAllocsWhenUnchanged(t *testing.T) {
	rules := mustRules(t, typicalRules)
	in := typicalSeries()
	buf := make([]prompb.Label, 0, 32)
	if _, _, changed := rules.Apply(in, buf); changed {
		t.Fatalf("typical series changed; the benchmark's premise is wrong")
	}
	if raceEnabled {
		t.Skip("sync.Pool drops items under -race")
	}
	allocs := testing.AllocsPerRun(100, func() {
		rules.Apply(in, buf)
	})
	if allocs != 0 {
		t.Fatalf("Apply allocated %v times for an unchanged series", allocs)
	}
}

func TestDebug(t *testing.T) {
	t.Parallel()
	cfgs, err := ParseConfigs([]byte(`
- {target_label: env, replacement: prod}
- {source_labels: [job], regex: 'nope', action: drop}
- {source_labels: [env], regex: 'prod', action: drop}
- {target_label: never, replacement: reached}
`))
	if err != nil {
		t.Fatal(err)
	}
	steps := Debug(cfgs, lbls("__name__", "up", "job", "a"))
	if len(steps) != 3 {
		t.Fatalf("got %d steps, want 3: %+v", len(steps), steps)
	}
	if !steps[0].Changed || !equal(steps[0].Labels, lbls("__name__", "up", "env", "prod", "job", "a")) {
		t.Errorf("step 0: %+v", steps[0])
	}
	if steps[1].Changed || steps[1].Dropped || len(steps[1].Labels) != 3 {
		t.Errorf("step 1: %+v", steps[1])
	}
	if !steps[2].Dropped || steps[2].Action != Drop || steps[2].Labels != nil {
		t.Errorf("step 2: %+v", steps[2])
	}
	bad := []Config{DefaultConfig(), {Action: "nope"}}
	bad[0].TargetLabel = "x"
	steps = Debug(bad, lbls("__name__", "up"))
	if len(steps) != 2 || steps[1].Err == nil {
		t.Errorf("invalid rule: %+v", steps)
	}
}

func TestCompileValidatesGoConfigs(t *testing.T) {
	t.Parallel()
	c := DefaultConfig()
	c.Action = HashMod
	c.TargetLabel = "x"
	if _, err := Compile([]Config{c}); err == nil || !strings.Contains(err.Error(), "rule 0") {
		t.Fatalf("err = %v", err)
	}
	c = DefaultConfig()
	c.TargetLabel = "\xff"
	if _, err := Compile([]Config{c}); err == nil || !strings.Contains(err.Error(), "invalid 'target_label'") {
		t.Fatalf("invalid UTF-8 target: err = %v", err)
	}
}

func mustRules(tb testing.TB, y string) *Rules {
	tb.Helper()
	cfgs, err := ParseConfigs([]byte(y))
	if err != nil {
		tb.Fatal(err)
	}
	r, err := Compile(cfgs)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// typicalRules are ten rules of the kind seen in write_relabel_configs; none of
// them changes typicalSeries.
const typicalRules = `
- {action: drop_metrics, regex: 'go_.*|process_.*'}
- {source_labels: [__name__], regex: 'apiserver_request_duration_seconds_bucket', action: drop}
- {regex: '__tmp_.*|pod_template_hash|controller_revision_hash', action: labeldrop}
- {source_labels: [instance], regex: '(.+):9100', target_label: instance}
- {source_labels: [env], regex: '', target_label: env, replacement: prod}
- {source_labels: [namespace], regex: 'kube-system|monitoring', action: drop}
- {if: 'up', target_label: scraped, replacement: 'yes'}
- {source_labels: [job, namespace], separator: '/', regex: 'debug/.*', action: drop}
- {source_labels: [team], target_label: team, action: lowercase}
- {source_labels: [pod], regex: '(.+)-[a-z0-9]{5}', target_label: workload, replacement: '$1', action: replace, if: '{workload=""}'}
`

func typicalSeries() []prompb.Label {
	return lbls(
		"__name__", "http_requests_total",
		"code", "200",
		"env", "staging",
		"instance", "10.1.2.3:8080",
		"job", "checkout",
		"method", "GET",
		"namespace", "shop",
		"pod", "checkout",
		"team", "payments",
		"workload", "checkout",
	)
}
