package relabel

import (
	"sort"
	"testing"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
)

func FuzzParseAndApply(f *testing.F) {
	for _, r := range diffRules {
		f.Add(r, "job", "api", "instance", "h:1")
	}
	f.Add(typicalRules, "pod", "checkout-abcde", "team", "PAY")
	f.Add("- {if: 'up', action: keep}", "a", "", "", "")
	f.Fuzz(func(t *testing.T, rules, n1, v1, n2, v2 string) {
		cfgs, err := ParseConfigs([]byte(rules))
		if err != nil {
			return
		}
		r, err := Compile(cfgs)
		if err != nil {
			t.Fatalf("ParseConfigs accepted rules that Compile rejects: %v", err)
		}
		in := []prompb.Label{{Name: "__name__", Value: "up"}, {Name: n1, Value: v1}, {Name: n2, Value: v2}}
		sort.Slice(in, func(i, j int) bool { return in[i].Name < in[j].Name })
		orig := append([]prompb.Label(nil), in...)
		out, keep, _ := r.Apply(in, nil)
		if !equal(in, orig) {
			t.Fatalf("input modified")
		}
		if keep && !sort.SliceIsSorted(out, func(i, j int) bool { return out[i].Name < out[j].Name }) {
			t.Fatalf("output not sorted: %v", out)
		}
		Debug(cfgs, in)
	})
}
