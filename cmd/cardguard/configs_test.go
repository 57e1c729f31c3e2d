package main

import (
	"bytes"
	"encoding"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/streamaggr"
	"gopkg.in/yaml.v3"

	"github.com/cardguard/cardguard/internal/streamrules"
)

// configsDir holds the example policy files shipped with cardguard. Every *.yml
// directly in it is a cardguard policy file; the Prometheus and Grafana files of the
// compose stack live in subdirectories.
const configsDir = "../../configs"

// TestExampleConfigs runs `cardguard -check-config` on every example, so that an
// example that no longer loads fails the build instead of an operator's deploy.
func TestExampleConfigs(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join(configsDir, "*.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"minimal.yml", "cardguard.yml", "compose.yml"} {
		if !slices.Contains(files, filepath.Join(configsDir, want)) {
			t.Errorf("configs/%s is missing (found %v)", want, files)
		}
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			var out, errOut bytes.Buffer
			if code := run([]string{"-check-config", "-config", f}, &out, &errOut); code != 0 {
				t.Fatalf("cardguard -check-config -config %s: exit %d: %s", f, code, errOut.String())
			}
			if !strings.Contains(out.String(), "is valid") {
				t.Errorf("unexpected output %q", out.String())
			}
		})
	}
}

// TestReferenceConfigComplete checks that configs/cardguard.yml sets every key of
// Config somewhere, so that the annotated reference grows with the code.
func TestReferenceConfigComplete(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join(configsDir, "cardguard.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if missing := missingKeys(reflect.TypeFor[Config](), &doc); len(missing) > 0 {
		t.Errorf("configs/cardguard.yml does not show these keys; add each with a comment saying what it does and its default:\n  %s",
			strings.Join(missing, "\n  "))
	}
}

// TestMissingKeys proves that the completeness check can fail, on every kind of
// position a key can be in: struct fields, map values, list elements.
func TestMissingKeys(t *testing.T) {
	t.Parallel()
	type leaf struct {
		A string `yaml:"a"`
		B int    `yaml:"b,omitempty"`
		C string `yaml:"-"`
	}
	type root struct {
		Top   leaf            `yaml:"top"`
		Map   map[string]leaf `yaml:"map"`
		List  []leaf          `yaml:"list"`
		Plain string          // yaml.v3 lowercases untagged field names
	}
	tests := []struct {
		name string
		doc  string
		want []string
	}{
		{
			name: "complete, keys spread over elements",
			doc:  "top: {a: x, b: 1}\nmap: {k: {a: x}, j: {b: 2}}\nlist: [{a: x}]\nplain: p\n",
			want: nil,
		},
		{
			name: "empty",
			doc:  "{}\n",
			want: []string{"list", "map", "plain", "top", "top.a", "top.b"},
		},
		{
			name: "nested keys missing everywhere",
			doc:  "top: {}\nmap: {k: {}}\nlist: [{}]\nplain: p\n",
			want: []string{"top.a", "top.b"},
		},
		{
			name: "empty map and list",
			doc:  "top: {a: x, b: 1}\nmap: {}\nlist: []\nplain: p\n",
			want: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var doc yaml.Node
			if err := yaml.Unmarshal([]byte(tt.doc), &doc); err != nil {
				t.Fatal(err)
			}
			got := missingKeys(reflect.TypeFor[root](), &doc)
			if !slices.Equal(got, tt.want) {
				t.Errorf("missing %q, want %q", got, tt.want)
			}
		})
	}
}

// missingKeys walks typ and doc together and returns the keys of every struct type
// reachable from typ that doc never sets, each under the first path where that type
// appears. A struct type counts as covered field by field across all its positions:
// limits set once under limits.defaults need not be repeated under an override, and
// a relabel key need appear in one rule only. Types that decode from text (tenant
// IDs) and durations are values, not sections.
func missingKeys(typ reflect.Type, doc *yaml.Node) []string {
	w := keyWalker{seen: map[reflect.Type]map[string]bool{}, firstPath: map[reflect.Type]string{}}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		doc = doc.Content[0]
	}
	w.walk(typ, doc, "")
	var missing []string
	for typ, path := range w.firstPath {
		for _, f := range yamlFields(typ) {
			if !w.seen[typ][f.key] {
				missing = append(missing, joinPath(path, f.key))
			}
		}
	}
	slices.Sort(missing)
	return missing
}

type keyWalker struct {
	seen      map[reflect.Type]map[string]bool
	firstPath map[reflect.Type]string
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

func isSection(t reflect.Type) bool {
	// vmagent's relabel rules (input_ and output_relabel_configs of aggregation
	// rules) are vmagent's keys, documented by the relabel section's own.
	return t.Kind() == reflect.Struct && !reflect.PointerTo(t).Implements(textUnmarshaler) &&
		t.PkgPath() != "github.com/VictoriaMetrics/VictoriaMetrics/lib/promrelabel"
}

// streamRuleList is what an aggregation rule list holds, kept as YAML
// (streamrules.List): the reference must show every key of a vmagent rule.
var streamRuleList = reflect.TypeFor[[]streamaggr.Config]()

// walk records the keys n sets for t, and registers every section type below t even
// where n is absent, so that a whole missing section is reported key by key.
func (w *keyWalker) walk(t reflect.Type, n *yaml.Node, path string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeFor[streamrules.List]() {
		t = streamRuleList
	}
	switch {
	case isSection(t):
		if _, ok := w.firstPath[t]; !ok {
			w.firstPath[t] = path
			w.seen[t] = map[string]bool{}
		}
		for _, f := range yamlFields(t) {
			var v *yaml.Node
			if n != nil && n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == f.key {
						v = n.Content[i+1]
						w.seen[t][f.key] = true
					}
				}
			}
			w.walk(f.typ, v, joinPath(path, f.key))
		}
	case t.Kind() == reflect.Map:
		var walked bool
		if n != nil && n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				w.walk(t.Elem(), n.Content[i+1], joinPath(path, "<"+n.Content[i].Value+">"))
				walked = true
			}
		}
		if !walked {
			w.walk(t.Elem(), nil, joinPath(path, "<key>"))
		}
	case t.Kind() == reflect.Slice:
		var walked bool
		if n != nil && n.Kind == yaml.SequenceNode {
			for _, item := range n.Content {
				w.walk(t.Elem(), item, path+"[]")
				walked = true
			}
		}
		if !walked {
			w.walk(t.Elem(), nil, path+"[]")
		}
	}
}

type yamlField struct {
	key string
	typ reflect.Type
}

// yamlFields lists the keys of a struct as yaml.v3 names them: the tag's name, or
// the lower-cased field name without a tag; "-" and unexported fields are skipped.
func yamlFields(t reflect.Type) []yamlField {
	var fs []yamlField
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = strings.ToLower(f.Name)
		}
		fs = append(fs, yamlField{key: name, typ: f.Type})
	}
	return fs
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
