package relabel

import (
	"fmt"
	"sort"
	"testing"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	promrelabel "github.com/prometheus/prometheus/model/relabel"
	"gopkg.in/yaml.v3"
)

// diffInputs are the label sets every differential case runs against.
var diffInputs = [][]prompb.Label{
	lbls("__name__", "http_requests_total", "code", "200", "instance", "host-1:9100", "job", "api", "method", "GET", "path", "/users/42"),
	lbls("__name__", "node_cpu_seconds_total", "cpu", "3", "instance", "10.0.0.1:9100", "job", "node", "mode", "idle"),
	lbls("__name__", "up", "instance", "localhost", "job", "Prometheus"),
	lbls("__name__", "go_gc_duration_seconds", "quantile", "0.5", "env", "", "team", "Core-Infra"),
	lbls("__name__", "x", "a", "1", "b", "1", "c", "2", "a_b", "z", "__tmp_x", "t", "ünï", "çödé"),
	lbls("__name__", "metric_with_newline", "msg", "line1\nline2", "dollar", "$1$2"),
	lbls("__name__", "only_name"),
}

// diffRules are YAML rule lists, each compared against Prometheus on every input.
var diffRules = []string{
	// replace
	`- {source_labels: [instance], regex: '([^:]+):\d+', target_label: host}`,
	`- {source_labels: [instance], regex: '([^:]+):\d+', target_label: instance, replacement: '$1'}`,
	`- {target_label: env, replacement: prod}`,
	`- {target_label: job, replacement: ''}`,
	`- {source_labels: [job], target_label: job_copy}`,
	`- {source_labels: [missing], target_label: job}`,
	`- {source_labels: [missing], target_label: new, replacement: 'x'}`,
	`- {source_labels: [missing], regex: 'nope', target_label: new, replacement: 'x'}`,
	`- {source_labels: [job, instance], separator: '@', target_label: id}`,
	`- {source_labels: [job, instance, missing], target_label: id}`,
	`- {source_labels: [job, instance], separator: '', regex: '(.*)(\d)', target_label: last, replacement: '${2}-${1}'}`,
	`- {source_labels: [job], regex: '(.)(.*)', target_label: 'lbl_$1', replacement: '$2'}`,
	`- {source_labels: [job], regex: '(.*)', target_label: '$1', replacement: 'v'}`,
	`- {source_labels: [job], regex: '(a)?(.*)', target_label: out, replacement: '[$1][$2][$3]'}`,
	`- {source_labels: [job], regex: 'api|node', target_label: matched, replacement: 'yes'}`,
	`- {source_labels: [job], regex: 'ap', target_label: matched, replacement: 'yes'}`,
	`- {source_labels: [job], regex: '', target_label: empty_job, replacement: 'yes'}`,
	`- {source_labels: [env], regex: '', target_label: env, replacement: 'default'}`,
	`- {source_labels: [__name__], regex: '(.+)_total', target_label: __name__, replacement: '${1}_count'}`,
	`- {source_labels: [msg], regex: 'line1.line2', target_label: dotall, replacement: 'yes'}`,
	`- {source_labels: [dollar], target_label: dcopy}`,
	`- {source_labels: [job], regex: '(?i)prometheus', target_label: ci, replacement: '$0!'}`,
	`- {source_labels: [job], regex: '(?P<first>.)(.*)', target_label: named, replacement: '${first}_$first'}`,
	`- {source_labels: [job], target_label: job, replacement: '$1$1'}`,
	// keep / drop
	`- {source_labels: [job], regex: api, action: keep}`,
	`- {source_labels: [job], regex: api, action: drop}`,
	`- {source_labels: [job], regex: 'a.*', action: keep}`,
	`- {source_labels: [missing], regex: '', action: keep}`,
	`- {source_labels: [missing], action: drop}`,
	`- {source_labels: [__name__, job], separator: '/', regex: 'up/.*', action: drop}`,
	`- {source_labels: [], action: keep}`,
	// keepequal / dropequal
	`- {source_labels: [a], target_label: b, action: keepequal}`,
	`- {source_labels: [a], target_label: c, action: dropequal}`,
	`- {source_labels: [a], target_label: b, action: dropequal}`,
	`- {source_labels: [missing], target_label: missing2, action: keepequal}`,
	// hashmod
	`- {source_labels: [instance], modulus: 4, target_label: shard, action: hashmod}`,
	`- {source_labels: [instance, job], modulus: 1000, target_label: shard, action: hashmod}`,
	`- {source_labels: [instance], modulus: 1000003, target_label: shard, action: hashmod}`,
	`- {source_labels: [missing], modulus: 7, target_label: shard, action: hashmod}`,
	`- {source_labels: [instance], modulus: 2, target_label: shard, action: hashmod}
- {source_labels: [shard], regex: '1', action: keep}`,
	// labelmap
	`- {regex: '__tmp_(.*)', action: labelmap}`,
	`- {regex: '(a|b)', replacement: 'copy_$1', action: labelmap}`,
	`- {regex: 'a_(.*)', action: labelmap}`,
	`- {regex: '(.*)', action: labelmap}`,
	`- {regex: '(.*)', replacement: 'x_$1', action: labelmap}`,
	`- {regex: 'job', replacement: 'service', action: labelmap}`,
	// labeldrop / labelkeep
	`- {regex: '__tmp_.*', action: labeldrop}`,
	`- {regex: 'instance|job', action: labeldrop}`,
	`- {regex: 'nothing', action: labeldrop}`,
	`- {regex: '__name__|job|instance', action: labelkeep}`,
	`- {regex: '.*', action: labelkeep}`,
	// lowercase / uppercase
	`- {source_labels: [job], target_label: job, action: lowercase}`,
	`- {source_labels: [team], target_label: team_lc, action: lowercase}`,
	`- {source_labels: [job, team], target_label: both, action: uppercase}`,
	`- {source_labels: [ünï], target_label: up, action: uppercase}`,
	`- {source_labels: [missing], target_label: job, action: lowercase}`,
	// chains
	`- {source_labels: [instance], regex: '(.*):.*', target_label: host}
- {source_labels: [host], regex: '10\..*', action: drop}
- {regex: 'instance', action: labeldrop}
- {target_label: cluster, replacement: eu-1}`,
	`- {regex: '(.*)', replacement: 'tmp_$1', action: labelmap}
- {regex: 'tmp_.*', action: labelkeep}`,
	`- {source_labels: [job], target_label: job, action: uppercase}
- {source_labels: [job], regex: 'API', action: keep}
- {source_labels: [job, code], separator: '-', target_label: jc}`,
	`- {regex: '.*', action: labeldrop}`,
}

func TestMatchesPrometheus(t *testing.T) {
	t.Parallel()
	for ri, rulesYAML := range diffRules {
		var promCfgs []*promrelabel.Config
		if err := yaml.Unmarshal([]byte(rulesYAML), &promCfgs); err != nil {
			t.Fatalf("rules %d: prometheus cannot parse: %v", ri, err)
		}
		for _, c := range promCfgs {
			if err := c.Validate(model.UTF8Validation); err != nil {
				t.Fatalf("rules %d: prometheus rejects: %v", ri, err)
			}
		}
		cfgs, err := ParseConfigs([]byte(rulesYAML))
		if err != nil {
			t.Fatalf("rules %d: ParseConfigs: %v", ri, err)
		}
		rules, err := Compile(cfgs)
		if err != nil {
			t.Fatalf("rules %d: Compile: %v", ri, err)
		}
		for ii, in := range diffInputs {
			t.Run(fmt.Sprintf("rules%d/input%d", ri, ii), func(t *testing.T) {
				lb := labels.NewBuilder(toPromLabels(in))
				wantKeep := promrelabel.ProcessBuilder(lb, promCfgs...)
				want := lb.Labels()
				if want.IsEmpty() {
					// An empty label set cannot be written: dropped, as vmagent does.
					wantKeep = false
				}

				orig := append([]prompb.Label(nil), in...)
				out, keep, changed := rules.Apply(in, make([]prompb.Label, 0, 2))
				if !equal(in, orig) {
					t.Fatalf("Apply modified its input")
				}
				if keep != wantKeep {
					t.Fatalf("keep = %v, Prometheus %v\nrules:\n%s\ninput: %v\nprometheus: %v", keep, wantKeep, rulesYAML, in, want)
				}
				if !keep {
					return
				}
				if got := toPromLabels(out); !labels.Equal(got, want) {
					t.Fatalf("labels differ\nrules:\n%s\ninput:      %v\ngot:        %v\nprometheus: %v", rulesYAML, toPromLabels(in), got, want)
				}
				if !sort.SliceIsSorted(out, func(i, j int) bool { return out[i].Name < out[j].Name }) {
					t.Fatalf("output not sorted: %v", out)
				}
				if wantChanged := !labels.Equal(toPromLabels(in), want); changed != wantChanged {
					t.Fatalf("changed = %v, want %v", changed, wantChanged)
				}
			})
		}
	}
}

// lbls builds a sorted label set from name/value pairs, leaving out empty values
// as remote write does.
func lbls(kv ...string) []prompb.Label {
	var out []prompb.Label
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			continue
		}
		out = append(out, prompb.Label{Name: kv[i], Value: kv[i+1]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func toPromLabels(ls []prompb.Label) labels.Labels {
	b := labels.NewScratchBuilder(len(ls))
	for _, l := range ls {
		b.Add(l.Name, l.Value)
	}
	b.Sort()
	return b.Labels()
}
