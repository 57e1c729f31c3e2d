package assets

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"gopkg.in/yaml.v3"

	"github.com/cardguard/cardguard/internal/queryaudit"
)

// Ref kinds.
const (
	KindDashboard    = "dashboard"
	KindLibraryPanel = "library_panel"
	KindRule         = "rule"
)

// maxExprBytes clips the expression kept in an AssetRef.
const maxExprBytes = 512

// item is one expression of a file with what it reads.
type item struct {
	ref AssetRef
	ex  queryaudit.Extraction
	// values, for a variable's label_values(selector, label): the label.
	values string
}

// parsed is what one file holds. It is immutable once built.
type parsed struct {
	items []item
	errs  []string
	// libs are the library panels the file defines (a library panel file, or
	// a dashboard's __elements), by uid.
	libs map[string]libPanel
	// libRefs are the library panels the file's dashboard uses.
	libRefs []libRef
}

type libPanel struct {
	name  string
	items []item
}

type libRef struct {
	uid, name, dashboard, panel string
}

// maxErrorsPerFile bounds the errors kept per file; the rest are counted.
const maxErrorsPerFile = 50

func (p *parsed) errorf(format string, args ...any) {
	switch {
	case len(p.errs) < maxErrorsPerFile:
		p.errs = append(p.errs, fmt.Sprintf(format, args...))
	case len(p.errs) == maxErrorsPerFile:
		p.errs = append(p.errs, "more errors left out")
	}
}

// errNotAsset is returned for a file that is neither JSON nor YAML by name.
var errNotAsset = errors.New("not an asset: want .json (Grafana dashboard or library panel), .yaml or .yml (Prometheus or vmalert rules)")

// parseFile reads one asset. An error means the file as a whole cannot be
// read (bad JSON or YAML, not a dashboard); expressions that do not parse are
// listed in parsed.errs instead.
func parseFile(name string, b []byte) (*parsed, error) {
	switch strings.ToLower(path.Ext(name)) {
	case ".json":
		return parseGrafana(name, b)
	case ".yaml", ".yml":
		return parseRules(name, b)
	}
	return nil, errNotAsset
}

// ---- Grafana ----

type gDashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Rows       []panel `json:"rows"` // the schema before Grafana 5
	Templating struct {
		List []templateVar `json:"list"`
	} `json:"templating"`
	Elements map[string]gLibrary `json:"__elements"`
}

type panel struct {
	ID           any             `json:"id"`
	Title        string          `json:"title"`
	Type         string          `json:"type"`
	Datasource   json.RawMessage `json:"datasource"`
	Targets      []target        `json:"targets"`
	Panels       []panel         `json:"panels"` // a collapsed row's, or an old row's
	LibraryPanel *struct {
		UID  string `json:"uid"`
		Name string `json:"name"`
	} `json:"libraryPanel"`
}

type target struct {
	Expr       string          `json:"expr"`
	RefID      string          `json:"refId"`
	Datasource json.RawMessage `json:"datasource"`
}

type templateVar struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Definition string          `json:"definition"`
	Datasource json.RawMessage `json:"datasource"`
	Options    []struct {
		Value any `json:"value"`
	} `json:"options"`
	Current struct {
		Value any `json:"value"`
	} `json:"current"`
}

type gLibrary struct {
	UID   string          `json:"uid"`
	Name  string          `json:"name"`
	Model json.RawMessage `json:"model"`
}

func parseGrafana(name string, b []byte) (*parsed, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, fmt.Errorf("%s: invalid JSON: %w", name, err)
	}
	p := &parsed{}
	// The HTTP API wraps both: {"dashboard": {...}, "meta": ...} and
	// {"result": {uid, name, model}}.
	if raw, ok := top["dashboard"]; ok {
		return p, p.dashboard(name, raw)
	}
	if raw, ok := top["result"]; ok {
		var lib gLibrary
		if err := json.Unmarshal(raw, &lib); err == nil && len(lib.Model) > 0 {
			return p, p.library(name, lib)
		}
	}
	if _, ok := top["model"]; ok {
		var lib gLibrary
		if err := json.Unmarshal(b, &lib); err != nil {
			return nil, fmt.Errorf("%s: invalid library panel: %w", name, err)
		}
		return p, p.library(name, lib)
	}
	_, hasPanels := top["panels"]
	_, hasRows := top["rows"]
	_, hasTemplating := top["templating"]
	if !hasPanels && !hasRows && !hasTemplating {
		return nil, fmt.Errorf("%s: neither a Grafana dashboard (panels, rows, templating) nor a library panel (model)", name)
	}
	return p, p.dashboard(name, b)
}

func (p *parsed) dashboard(file string, raw json.RawMessage) error {
	var d gDashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		return fmt.Errorf("%s: invalid dashboard: %w", file, err)
	}
	vars := p.variables(file, d)
	for uid, el := range d.Elements {
		if len(el.Model) == 0 {
			continue
		}
		lp := &parsed{}
		if el.UID == "" {
			el.UID = uid
		}
		_ = lp.library(file, el)
		p.mergeLibs(lp)
	}
	for i := range d.Panels {
		p.panel(file, d.Title, &d.Panels[i], vars, 0)
	}
	for i := range d.Rows {
		p.panel(file, d.Title, &d.Rows[i], vars, 0)
	}
	return nil
}

func (p *parsed) mergeLibs(lp *parsed) {
	if p.libs == nil {
		p.libs = map[string]libPanel{}
	}
	maps.Copy(p.libs, lp.libs)
	for _, e := range lp.errs {
		p.errorf("%s", e)
	}
}

func (p *parsed) library(file string, lib gLibrary) error {
	var pn panel
	if err := json.Unmarshal(lib.Model, &pn); err != nil {
		return fmt.Errorf("%s: invalid library panel model: %w", file, err)
	}
	name := cmpOr(lib.Name, pn.Title)
	sub := &parsed{}
	sub.panel(file, "", &pn, map[string]*variable{}, 0)
	for i := range sub.items {
		sub.items[i].ref.Kind = KindLibraryPanel
		sub.items[i].ref.Panel = name
	}
	p.items = append(p.items, sub.items...)
	for _, e := range sub.errs {
		p.errorf("%s", e)
	}
	if lib.UID != "" {
		if p.libs == nil {
			p.libs = map[string]libPanel{}
		}
		p.libs[lib.UID] = libPanel{name: name, items: sub.items}
	}
	return nil
}

// maxPanelDepth bounds the nesting of panels (rows hold panels).
const maxPanelDepth = 8

func (p *parsed) panel(file, dashboard string, pn *panel, vars map[string]*variable, depth int) {
	if depth > maxPanelDepth {
		p.errorf("panel %q: nested deeper than %d", pn.Title, maxPanelDepth)
		return
	}
	title := cmpOr(pn.Title, panelID(pn.ID))
	if pn.LibraryPanel != nil && pn.LibraryPanel.UID != "" {
		p.libRefs = append(p.libRefs, libRef{uid: pn.LibraryPanel.UID, name: pn.LibraryPanel.Name, dashboard: dashboard, panel: title})
	}
	for _, t := range pn.Targets {
		if t.Expr == "" || !promDatasource(t.Datasource, pn.Datasource) {
			continue
		}
		ref := AssetRef{Kind: KindDashboard, File: file, Title: dashboard, Panel: title}
		p.expr(ref, t.Expr, vars)
	}
	for i := range pn.Panels {
		p.panel(file, dashboard, &pn.Panels[i], vars, depth+1)
	}
}

func panelID(id any) string {
	switch v := id.(type) {
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case string:
		return v
	}
	return ""
}

// promDatasource tells whether a target queries a Prometheus-compatible
// datasource: its own or its panel's datasource type, when given, must be one.
// A datasource given by variable or by name only may be; it is read.
func promDatasource(raws ...json.RawMessage) bool {
	for _, raw := range raws {
		if len(raw) == 0 {
			continue
		}
		var ds struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(raw, &ds) != nil || ds.Type == "" {
			continue // a string: a name or ${DS}
		}
		switch ds.Type {
		case "prometheus", "victoriametrics-metrics-datasource", "victoriametrics-datasource", "datasource":
			return true // "datasource": Grafana's mixed or dashboard datasource
		}
		return false
	}
	return true
}

// variables reads the dashboard's variables for substitution, and records the
// expressions of query variables as items.
func (p *parsed) variables(file string, d gDashboard) map[string]*variable {
	vars := map[string]*variable{}
	for _, tv := range d.Templating.List {
		if tv.Name == "" {
			continue
		}
		v := &variable{}
		vars[tv.Name] = v
		q := queryString(tv.Query)
		switch tv.Type {
		case "custom":
			for _, o := range tv.Options {
				if s, ok := o.Value.(string); ok {
					v.values = append(v.values, s)
				}
			}
			if len(v.values) == 0 {
				for _, s := range strings.Split(q, ",") {
					if _, val, ok := strings.Cut(s, " : "); ok {
						s = val
					}
					v.values = append(v.values, strings.TrimSpace(s))
				}
			}
		case "constant", "textbox":
			v.values = []string{q}
		case "interval":
			v.duration = true
		case "query":
			if !promDatasource(tv.Datasource) {
				continue
			}
			q = cmpOr(q, tv.Definition)
			ref := AssetRef{Kind: KindDashboard, File: file, Title: d.Title, Panel: "variable " + tv.Name}
			v.nameRegex = p.variableQuery(ref, q, vars)
		}
		v.classify()
	}
	return vars
}

// queryString reads a variable's query: a string, or {"query": "..."}.
func queryString(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	_ = json.Unmarshal(raw, &o)
	return o.Query
}

var (
	labelValuesRE = regexp.MustCompile(`^\s*label_values\(\s*(.*?)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$`)
	labelValues1  = regexp.MustCompile(`^\s*label_values\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$`)
	labelNamesRE  = regexp.MustCompile(`^\s*label_names\(\s*(.*?)\s*\)\s*$`)
	metricsRE     = regexp.MustCompile(`^\s*metrics\(\s*(.*?)\s*\)\s*$`)
	queryResultRE = regexp.MustCompile(`^\s*query_result\(\s*(.*)\s*\)\s*$`)
)

// variableQuery records what a query variable reads, as Grafana's Prometheus
// datasource runs it, and returns a regex of the metric names it lists, if it
// lists names.
func (p *parsed) variableQuery(ref AssetRef, q string, vars map[string]*variable) string {
	switch {
	case strings.TrimSpace(q) == "":
		return ""
	case labelValues1.MatchString(q):
		// The values of a label over every series: reads no metric's data.
		if labelValues1.FindStringSubmatch(q)[1] == model.MetricNameLabel {
			return ".+"
		}
		return ""
	case labelValuesRE.MatchString(q):
		m := labelValuesRE.FindStringSubmatch(q)
		p.exprAs(ref, m[1], vars, m[2], true)
		if m[2] == model.MetricNameLabel {
			return ".+"
		}
		return ""
	case labelNamesRE.MatchString(q):
		if sel := labelNamesRE.FindStringSubmatch(q)[1]; sel != "" {
			p.exprAs(ref, sel, vars, "", true)
		}
		return ""
	case metricsRE.MatchString(q):
		re := metricsRE.FindStringSubmatch(q)[1]
		re = strings.Trim(re, `"'`)
		re = grafanaVar.ReplaceAllString(re, ".*") // a variable in the regex widens it
		if _, err := regexp.Compile(re); err != nil || re == "" {
			return ".+"
		}
		// Grafana's metrics(re) is unanchored.
		rx := ".*(?:" + re + ").*"
		p.exprAs(ref, `{__name__=~`+strconv.Quote(rx)+`}`, vars, "", true)
		return rx
	case queryResultRE.MatchString(q):
		p.expr(ref, queryResultRE.FindStringSubmatch(q)[1], vars)
		return ""
	}
	p.expr(ref, q, vars)
	return ""
}

func (p *parsed) expr(ref AssetRef, expr string, vars map[string]*variable) {
	p.exprAs(ref, expr, vars, "", false)
}

// exprAs extracts one expression after substituting variables. selectorOnly
// says that expr is the series selector of a metadata query (label_values,
// label_names, metrics), values the label whose values it lists.
func (p *parsed) exprAs(ref AssetRef, expr string, vars map[string]*variable, values string, selectorOnly bool) {
	ref.Expr = clip(expr, maxExprBytes)
	sub := substitute(expr, vars)
	ex, err := queryaudit.Extract(sub.expr)
	if err != nil {
		where := ref.Panel
		if ref.Rule != "" {
			where = ref.Rule
		}
		p.errorf("%s: %s: %v", cmpOr(ref.Title, ref.File), where, err)
		return
	}
	ex = fixup(ex, sub)
	if selectorOnly {
		// label_values, label_names, metrics: names and values, never the
		// series with their labels.
		for i := range ex.Selectors {
			ex.Selectors[i].AllLabels = false
		}
	}
	p.items = append(p.items, item{ref: ref, ex: ex, values: values})
}

// fixup turns placeholders back into what their variables can stand for, and
// names made of a variable in a string ({__name__="node_$x"} became
// "node_.*") into regexes. A label named by a variable in a string
// (label_replace(x, "$dst", ...)) may be any label.
func fixup(ex queryaudit.Extraction, sub substitution) queryaudit.Extraction {
	out := queryaudit.Extraction{Selectors: make([]queryaudit.Selector, 0, len(ex.Selectors))}
	for _, s := range ex.Selectors {
		// Extraction is shared read-only: copy what changes.
		s.Labels = maps.Clone(s.Labels)
		if v, ok := sub.names[s.Name]; ok {
			s.NameMatchers = append(slices.Clip(s.NameMatchers), nameMatcher(v))
			s.Name = ""
		} else if strings.Contains(s.Name, ".*") {
			if m, err := labels.NewMatcher(labels.MatchRegexp, model.MetricNameLabel, s.Name); err == nil {
				s.NameMatchers = append(slices.Clip(s.NameMatchers), m)
				s.Name = ""
			}
		}
		for l, how := range s.Labels {
			v, isVar := sub.names[l]
			if !isVar && !strings.Contains(l, ".*") {
				continue
			}
			delete(s.Labels, l)
			if isVar && len(v.values) > 0 {
				for _, val := range v.values {
					if model.LegacyValidation.IsValidLabelName(val) {
						s.Labels[val] |= how
					}
				}
				continue
			}
			// A label named by a variable of unknown values: any label may be it.
			s.AllLabels = true
		}
		out.Selectors = append(out.Selectors, s)
	}
	return out
}

// nameMatcher is the __name__ matcher for the names a variable can take.
func nameMatcher(v *variable) *labels.Matcher {
	re := ".+"
	switch {
	case v.nameRegex != "":
		re = v.nameRegex
	case len(v.values) > 0:
		qs := make([]string, 0, len(v.values))
		for _, s := range v.values {
			if s == "$__all" || s == "All" {
				qs = []string{".+"}
				break
			}
			qs = append(qs, regexp.QuoteMeta(s))
		}
		re = strings.Join(qs, "|")
	}
	m, err := labels.NewMatcher(labels.MatchRegexp, model.MetricNameLabel, re)
	if err != nil {
		m = labels.MustNewMatcher(labels.MatchRegexp, model.MetricNameLabel, ".+")
	}
	return m
}

// ---- rules ----

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Type  string `yaml:"type"`
		Rules []struct {
			Alert  string `yaml:"alert"`
			Record string `yaml:"record"`
			Expr   string `yaml:"expr"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// parseRules reads a Prometheus or vmalert rule file. vmalert groups of type
// graphite or vlogs query no metrics here and are left out.
func parseRules(name string, b []byte) (*parsed, error) {
	var rf ruleFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&rf); err != nil {
		return nil, fmt.Errorf("%s: invalid rule file: %w", name, err)
	}
	if len(rf.Groups) == 0 {
		return nil, fmt.Errorf("%s: no rule groups: not a Prometheus or vmalert rule file", name)
	}
	p := &parsed{}
	for _, g := range rf.Groups {
		switch strings.ToLower(g.Type) {
		case "", "prometheus":
		default:
			continue
		}
		for _, r := range g.Rules {
			if strings.TrimSpace(r.Expr) == "" {
				continue
			}
			ref := AssetRef{Kind: KindRule, File: name, Title: g.Name, Rule: cmpOr(r.Alert, r.Record)}
			ref.Expr = clip(r.Expr, maxExprBytes)
			ex, err := queryaudit.Extract(r.Expr)
			if err != nil {
				p.errorf("group %s: rule %s: %v", g.Name, ref.Rule, err)
				continue
			}
			p.items = append(p.items, item{ref: ref, ex: ex})
		}
	}
	return p, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
