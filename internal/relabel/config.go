// Package relabel compiles Prometheus-compatible relabeling rules once and applies
// them to remote-write label sets without allocating when nothing changes.
//
// The configuration is the Prometheus relabel_config, field for field, with the
// same defaults and the same validation (label names are checked with the UTF-8
// scheme of Prometheus 3). Three VictoriaMetrics extensions are accepted:
//
//   - `if:` a series selector (or a list of them, any of which may match); the
//     rule applies only to series that match it. As in VictoriaMetrics, a `keep`
//     rule (and so `keep_metrics`) drops the series when `if` does not match.
//   - `action: drop_metrics` / `keep_metrics`: `regex` matched against the metric
//     name; the same as drop/keep with `source_labels: [__name__]`.
//   - `regex` given as a list of strings, joined with "|".
package relabel

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/prometheus/promql/parser"
	"gopkg.in/yaml.v3"
)

// Action is what a rule does. Values are lower case.
type Action string

// Actions. The first eleven are Prometheus', the last two VictoriaMetrics'.
const (
	Replace     Action = "replace"
	Keep        Action = "keep"
	Drop        Action = "drop"
	KeepEqual   Action = "keepequal"
	DropEqual   Action = "dropequal"
	HashMod     Action = "hashmod"
	LabelMap    Action = "labelmap"
	LabelDrop   Action = "labeldrop"
	LabelKeep   Action = "labelkeep"
	Lowercase   Action = "lowercase"
	Uppercase   Action = "uppercase"
	DropMetrics Action = "drop_metrics"
	KeepMetrics Action = "keep_metrics"
)

func (a Action) known() bool {
	switch a {
	case Replace, Keep, Drop, KeepEqual, DropEqual, HashMod, LabelMap, LabelDrop,
		LabelKeep, Lowercase, Uppercase, DropMetrics, KeepMetrics:
		return true
	}
	return false
}

// Defaults of a rule, as in Prometheus.
const (
	DefaultSeparator   = ";"
	DefaultRegex       = "(.*)"
	DefaultReplacement = "$1"
)

// Config is one relabeling rule. Decoded from YAML it starts from DefaultConfig,
// rejects unknown keys and is validated. A Config built in Go should start from
// DefaultConfig too: the zero Separator, Regex and Replacement mean empty strings,
// not the defaults.
type Config struct {
	// If holds series selectors; when set, the rule applies only to series
	// matching at least one of them.
	If           []string `yaml:"if,omitempty" json:"if,omitempty"`
	SourceLabels []string `yaml:"source_labels,flow,omitempty" json:"source_labels,omitempty"`
	Separator    string   `yaml:"separator" json:"separator"`
	// Regex is the expression as written; it is anchored at both ends when compiled.
	Regex       string `yaml:"regex" json:"regex"`
	Modulus     uint64 `yaml:"modulus,omitempty" json:"modulus,omitempty"`
	TargetLabel string `yaml:"target_label,omitempty" json:"target_label,omitempty"`
	Replacement string `yaml:"replacement" json:"replacement"`
	Action      Action `yaml:"action" json:"action"`
}

// DefaultConfig returns a rule with Prometheus' defaults: replace, separator ";",
// regex "(.*)", replacement "$1".
func DefaultConfig() Config {
	return Config{
		Separator:   DefaultSeparator,
		Regex:       DefaultRegex,
		Replacement: DefaultReplacement,
		Action:      Replace,
	}
}

// ParseConfigs decodes a YAML list of rules strictly and validates each.
func ParseConfigs(data []byte) ([]Config, error) {
	var cfgs []Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfgs); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	return cfgs, nil
}

// UnmarshalYAML decodes a rule over DefaultConfig and validates it. Unknown and
// duplicate keys are errors whatever the decoder's settings, because yaml.v3 does
// not carry KnownFields into custom unmarshalers.
func (c *Config) UnmarshalYAML(node *yaml.Node) error {
	if node.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: relabel rule must be a mapping", node.Line)
	}
	*c = DefaultConfig()
	seen := make(map[string]bool, len(node.Content)/2)
	for i := 0; i+1 < len(node.Content); i += 2 {
		k, v := node.Content[i], node.Content[i+1]
		key := k.Value
		if seen[key] {
			return fmt.Errorf("line %d: duplicate key %q in relabel rule", k.Line, key)
		}
		seen[key] = true
		var err error
		switch key {
		case "if":
			c.If, err = decodeStrings(v, "if")
		case "source_labels":
			if v.Kind == yaml.ScalarNode && v.ShortTag() != "!!null" {
				err = errors.New("source_labels must be a list of label names")
				break
			}
			c.SourceLabels, err = decodeStrings(v, "source_labels")
		case "separator":
			err = v.Decode(&c.Separator)
		case "regex":
			var parts []string
			if parts, err = decodeStrings(v, "regex"); err == nil {
				c.Regex = strings.Join(parts, "|")
			}
		case "modulus":
			err = v.Decode(&c.Modulus)
		case "target_label":
			err = v.Decode(&c.TargetLabel)
		case "replacement":
			err = v.Decode(&c.Replacement)
		case "action":
			var s string
			if err = v.Decode(&s); err == nil {
				c.Action = Action(strings.ToLower(s))
			}
		default:
			return fmt.Errorf("line %d: unknown field %q in relabel rule", k.Line, key)
		}
		if err != nil {
			return fmt.Errorf("line %d: relabel rule field %q: %w", v.Line, key, err)
		}
	}
	if (c.Action == DropMetrics || c.Action == KeepMetrics) && !seen["regex"] && len(c.If) == 0 {
		return fmt.Errorf("line %d: %s action requires 'regex' or 'if'", node.Line, c.Action)
	}
	if (c.Action == KeepEqual || c.Action == DropEqual) && seen["regex"] {
		return fmt.Errorf("line %d: %s action requires only 'source_labels' and 'target_label', and no other fields", node.Line, c.Action)
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("line %d: %w", node.Line, err)
	}
	return nil
}

// decodeStrings reads a string or a list of strings; null gives nil.
func decodeStrings(v *yaml.Node, field string) ([]string, error) {
	switch {
	case v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null":
		return nil, nil
	case v.Kind == yaml.ScalarNode:
		return []string{v.Value}, nil
	case v.Kind == yaml.SequenceNode:
		out := make([]string, 0, len(v.Content))
		for _, item := range v.Content {
			if item.Kind != yaml.ScalarNode || item.ShortTag() == "!!null" {
				return nil, fmt.Errorf("%s items must be strings", field)
			}
			out = append(out, item.Value)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s must be a string or a list of strings", field)
}

// Validate applies Prometheus' checks (model/relabel Config.Validate with UTF-8
// label names) and the VictoriaMetrics ones for `if`, drop_metrics and keep_metrics.
func (c *Config) Validate() error {
	if c.Action == "" {
		return errors.New("relabel action cannot be empty")
	}
	if !c.Action.known() {
		return fmt.Errorf("unknown relabel action %q", truncate(string(c.Action)))
	}
	if _, err := compileRegex(c.Regex); err != nil {
		return fmt.Errorf("invalid regex %q: %w", truncate(c.Regex), err)
	}
	if _, err := compileIf(c.If); err != nil {
		return err
	}
	a := c.Action
	if c.Modulus == 0 && a == HashMod {
		return errors.New("relabel configuration for hashmod requires non-zero modulus")
	}
	if (a == Replace || a == HashMod || a == Lowercase || a == Uppercase || a == KeepEqual || a == DropEqual) && c.TargetLabel == "" {
		return fmt.Errorf("relabel configuration for %s action requires 'target_label' value", a)
	}
	if (a == Replace || a == HashMod || a == Lowercase || a == Uppercase || a == KeepEqual || a == DropEqual) && !validLabelName(c.TargetLabel) {
		return fmt.Errorf("%q is invalid 'target_label' for %s action", truncate(c.TargetLabel), a)
	}
	if (a == Lowercase || a == Uppercase || a == KeepEqual || a == DropEqual) && c.Replacement != DefaultReplacement {
		return fmt.Errorf("'replacement' can not be set for %s action", a)
	}
	if a == LabelMap && !validLabelName(c.Replacement) {
		return fmt.Errorf("%q is invalid 'replacement' for %s action", truncate(c.Replacement), a)
	}
	if a == DropEqual || a == KeepEqual {
		if c.Regex != DefaultRegex || c.Modulus != 0 || c.Separator != DefaultSeparator || c.Replacement != DefaultReplacement {
			return fmt.Errorf("%s action requires only 'source_labels' and 'target_label', and no other fields", a)
		}
	}
	if a == LabelDrop || a == LabelKeep {
		if c.SourceLabels != nil || c.TargetLabel != "" || c.Modulus != 0 || c.Separator != DefaultSeparator || c.Replacement != DefaultReplacement {
			return fmt.Errorf("%s action requires only 'regex', and no other fields", a)
		}
	}
	if a == DropMetrics || a == KeepMetrics {
		if len(c.SourceLabels) > 0 {
			return fmt.Errorf("'source_labels' must be empty for %s action; got %q", a, c.SourceLabels)
		}
		if c.Regex == "" && len(c.If) == 0 {
			return fmt.Errorf("%s action requires a non-empty 'regex' or 'if'", a)
		}
	}
	return nil
}

// validLabelName is Prometheus' UTF-8 scheme: any non-empty valid UTF-8 string.
func validLabelName(s string) bool { return s != "" && utf8.ValidString(s) }

func compileRegex(s string) (*regexp.Regexp, error) {
	return regexp.Compile("^(?s:" + s + ")$")
}

func compileIf(sels []string) ([]selector, error) {
	if len(sels) == 0 {
		return nil, nil
	}
	p := parser.NewParser(parser.Options{})
	out := make([]selector, 0, len(sels))
	for _, s := range sels {
		ms, err := p.ParseMetricSelector(s)
		if err != nil {
			return nil, fmt.Errorf("invalid 'if' selector %q: %w", truncate(s), err)
		}
		out = append(out, selector(ms))
	}
	return out, nil
}

func truncate(s string) string {
	const max = 128
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
