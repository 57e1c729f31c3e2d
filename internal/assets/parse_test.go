package assets

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

// metricsOf lists the exact metric names and the refs' kinds and panels of a
// parsed file.
func metricsOf(p *parsed) (names, where []string) {
	for _, it := range p.items {
		for _, s := range it.ex.Selectors {
			if s.Name != "" && !slices.Contains(names, s.Name) {
				names = append(names, s.Name)
			}
		}
		where = append(where, it.ref.Kind+":"+it.ref.Panel)
	}
	slices.Sort(names)
	return names, where
}

func TestParseShapes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, file, body string
		metrics, where   []string
		libs             []string
	}{
		{
			name:    "dashboard wrapped by the HTTP API",
			file:    "d.json",
			body:    `{"dashboard": {"title": "D", "panels": [{"title": "P", "targets": [{"expr": "a_total"}]}]}, "meta": {}}`,
			metrics: []string{"a_total"}, where: []string{"dashboard:P"},
		},
		{
			name:    "schema before Grafana 5: rows of panels",
			file:    "d.json",
			body:    `{"title": "Old", "rows": [{"title": "R", "panels": [{"id": 3, "targets": [{"expr": "b_total"}]}]}]}`,
			metrics: []string{"b_total"}, where: []string{"dashboard:3"},
		},
		{
			name: "exported for sharing: library panels in __elements",
			file: "d.json",
			body: `{"title": "E", "__elements": {"u1": {"name": "Lib", "uid": "u1", "model": {"targets": [{"expr": "c_total"}]}}},
			       "panels": [{"title": "uses lib", "libraryPanel": {"uid": "u1", "name": "Lib"}}]}`,
			// Credited through the panel that uses it (see TestElementsUses).
			libs: []string{"u1"},
		},
		{
			name:    "library panel from the HTTP API",
			file:    "l.json",
			body:    `{"result": {"uid": "u2", "name": "L2", "model": {"title": "T", "targets": [{"expr": "d_total"}]}}}`,
			metrics: []string{"d_total"}, where: []string{"library_panel:L2"}, libs: []string{"u2"},
		},
		{
			name:  "variable in a __name__ matcher value",
			file:  "d.json",
			body:  `{"title": "V", "panels": [{"title": "P", "targets": [{"expr": "sum({__name__=\"node_$x\"})"}]}]}`,
			where: []string{"dashboard:P"},
		},
		{
			name: "metrics() with a variable lists every name it can",
			file: "d.json",
			body: `{"title": "M", "templating": {"list": [{"name": "m", "type": "query", "query": "metrics(${prefix}_total)"}]},
			       "panels": [{"title": "P", "targets": [{"expr": "rate($m[5m])"}]}]}`,
			where: []string{"dashboard:variable m", "dashboard:P"},
		},
		{
			name:    "vmalert rules with MetricsQL, graphite group left out",
			file:    "r.yml",
			body:    "groups:\n- name: a\n  rules:\n  - record: r\n    expr: rollup_rate(e_total[5m])\n- name: g\n  type: graphite\n  rules:\n  - alert: x\n    expr: 'sumSeries(a.b)'\n",
			metrics: []string{"e_total"}, where: []string{"rule:"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := parseFile(tc.file, []byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if len(p.errs) > 0 {
				t.Errorf("errors %q", p.errs)
			}
			names, where := metricsOf(p)
			if !slices.Equal(names, tc.metrics) || !slices.Equal(where, tc.where) {
				t.Errorf("metrics %q where %q, want %q %q", names, where, tc.metrics, tc.where)
			}
			if libs := slices.Sorted(maps.Keys(p.libs)); !slices.Equal(libs, tc.libs) {
				t.Errorf("library panels %q, want %q", libs, tc.libs)
			}
		})
	}
	p, _ := parseFile("d.json", []byte(tests[5].body))
	for _, it := range p.items {
		ms := it.ex.Selectors[0].NameMatchers
		if len(ms) != 1 || !ms[0].Matches("node_forks_total") || ms[0].Matches("node_load1") {
			t.Errorf("%s: name matchers %v, want every name ending in _total", it.ref.Panel, ms)
		}
	}
	// {__name__="node_$x"} reads the node_ metrics: a regex, not a name.
	p, _ = parseFile("d.json", []byte(tests[4].body))
	s := p.items[0].ex.Selectors[0]
	if s.Name != "" || len(s.NameMatchers) != 1 || !s.NameMatchers[0].Matches("node_load1") || s.NameMatchers[0].Matches("up") {
		t.Errorf("selector %+v", s)
	}
}

func TestParseRefusals(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ file, body, says string }{
		{"x.json", `[1, 2]`, "invalid JSON"},
		{"x.json", `{"foo": 1}`, "neither a Grafana dashboard"},
		{"x.yaml", "foo: bar\n", "no rule groups"},
		{"x.yaml", "groups: {", "invalid rule file"},
		{"x.txt", "", "not an asset"},
	} {
		if _, err := parseFile(tc.file, []byte(tc.body)); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("parseFile(%s, %q) = %v, want an error saying %q", tc.file, tc.body, err, tc.says)
		}
	}
}

func TestElementsUses(t *testing.T) {
	t.Parallel()
	b := newBook(t, Config{UploadDir: t.TempDir()})
	body := `{"title": "E", "__elements": {"u1": {"name": "Lib", "uid": "u1", "model": {"targets": [{"expr": "c_total"}]}}},
	  "panels": [{"title": "uses lib", "libraryPanel": {"uid": "u1", "name": "Lib"}}]}`
	if _, err := b.Put(t1, "e.json", []byte(body)); err != nil {
		t.Fatal(err)
	}
	refs := b.Uses(t1)["c_total"].Refs
	if len(refs) != 1 || refs[0] != (AssetRef{Kind: KindLibraryPanel, File: "uploaded/e.json", Title: "E", Panel: "uses lib (library panel Lib)", Expr: "c_total"}) {
		t.Errorf("refs %+v", refs)
	}
	if n := b.Problems(t1); n != 0 {
		t.Errorf("%d problems", n)
	}
}
