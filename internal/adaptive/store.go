package adaptive

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"regexp/syntax"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/cardguard/cardguard/internal/atomicfile"
	"github.com/cardguard/cardguard/internal/relabel"
)

// Store keeps each tenant's applied rules and exemptions, by tenant, as JSON.
// state.RulesStore (Redis, with a local copy) and FileStore implement it.
type Store interface {
	Load() (map[string][]byte, error)
	Save(key string, value []byte) error
}

// StoreFile is the name of the file FileStore keeps in its directory.
const StoreFile = "adaptive_rules.json"

// FileStore keeps the store in one JSON file, {"<tenant>": "<state>"},
// replaced atomically on every change. Safe for concurrent use within one
// process.
type FileStore = atomicfile.KeyFile

// ReadsFile is the file of the reads that keep metrics from aggregation,
// when no Redis shares them (Readers.Share).
const ReadsFile = "adaptive_reads.json"

// NewFileStore returns a store writing dir/adaptive_rules.json.
func NewFileStore(dir string) *FileStore { return NewFileStoreAt(dir, StoreFile) }

// NewFileStoreAt returns a store writing dir/name.
func NewFileStoreAt(dir, name string) *FileStore {
	return atomicfile.NewKeyFile(filepath.Join(dir, name))
}

// Applied is a rule in force: what it does, who applied it and when, and
// what was expected of it.
type Applied struct {
	Metric string `json:"metric"`
	Kind   string `json:"kind"`
	// Labels are the labels aggregated away (aggregate).
	Labels []string `json:"labels,omitempty"`
	// Match is the selector of the series dropped (drop_series), without the
	// segment's matcher, which Rule carries.
	Match string `json:"match,omitempty"`
	// Segment, when set, scopes the rule to the series with
	// SegmentLabel="Segment". Rules stored before segments had none: they
	// are whole-metric rules. A rule is metric, kind and segment.
	Segment      string         `json:"segment,omitempty"`
	SegmentLabel string         `json:"segmentLabel,omitempty"`
	Rule         relabel.Config `json:"rule"`
	AppliedBy    string         `json:"appliedBy"`
	AppliedAt    time.Time      `json:"appliedAt"`
	// Forced: applied over the readers listed in Overrode.
	Forced   bool     `json:"forced,omitempty"`
	Overrode []Ref    `json:"overrode,omitempty"`
	Estimate Estimate `json:"estimate"`
	Preview  *Preview `json:"preview,omitempty"`

	matchers []*labels.Matcher // drop_series: Match, parsed, with the segment's
}

// scope is the series a rule acts on.
func (a Applied) scope() Scope { return Scope{Label: a.SegmentLabel, Value: a.Segment} }

// Exemptions are metric names never recommended for anything.
type Exemptions struct {
	Exact  []string `json:"exact"`
	Prefix []string `json:"prefix"`
	Regex  []string `json:"regex"`
}

// maxExemptions caps each list of exemptions of a tenant. A regex costs its
// compiled program, about 100 bytes per instruction: `.{1000}` is 1000 of
// them, and a few kilobytes of such repeats held gigabytes on every replica
// that loaded them. maxRegexInsts caps one regex, maxTenantRegexInsts all of
// a tenant's; maxExemptionBytes caps each entry.
const (
	maxExemptions       = 1000
	maxExemptionBytes   = 1024
	maxRegexInsts       = 2000
	maxTenantRegexInsts = 20000
)

// compiled is Exemptions ready to match.
type compiledExemptions struct {
	exact  map[string]bool
	prefix []string
	regex  []*regexp.Regexp
}

func (x Exemptions) compile() (compiledExemptions, error) {
	c := compiledExemptions{exact: make(map[string]bool, len(x.Exact))}
	if n := max(len(x.Exact), len(x.Prefix), len(x.Regex)); n > maxExemptions {
		return c, fmt.Errorf("%d exemptions in one list: at most %d", n, maxExemptions)
	}
	for _, list := range [][]string{x.Exact, x.Prefix, x.Regex} {
		for _, e := range list {
			if len(e) > maxExemptionBytes {
				return c, fmt.Errorf("exemption %q: %d bytes, at most %d", clip(e, 100), len(e), maxExemptionBytes)
			}
		}
	}
	for _, e := range x.Exact {
		c.exact[e] = true
	}
	for _, p := range x.Prefix {
		if p == "" {
			return c, errors.New("empty prefix exemption: it would exempt every metric; list the metrics instead")
		}
	}
	c.prefix = x.Prefix
	insts := 0
	for _, r := range x.Regex {
		n, err := regexInsts("^(?:" + r + ")$")
		if err != nil {
			return c, fmt.Errorf("exemption regex %q: %w", clip(r, 100), err)
		}
		if n > maxRegexInsts {
			return c, fmt.Errorf("exemption regex %q: compiles to %d instructions, at most %d: use a shorter pattern or list the metrics", clip(r, 100), n, maxRegexInsts)
		}
		if insts += n; insts > maxTenantRegexInsts {
			return c, fmt.Errorf("exemption regexes compile to over %d instructions in all: use fewer or shorter patterns", maxTenantRegexInsts)
		}
		re, err := regexp.Compile("^(?:" + r + ")$")
		if err != nil {
			return c, fmt.Errorf("exemption regex %q: %w", clip(r, 100), err)
		}
		c.regex = append(c.regex, re)
	}
	return c, nil
}

// regexInsts is the size of the program regexp.Compile would build for re,
// measured before it builds the matcher (which costs several times more).
func regexInsts(re string) (int, error) {
	parsed, err := syntax.Parse(re, syntax.Perl)
	if err != nil {
		return 0, err
	}
	prog, err := syntax.Compile(parsed.Simplify())
	if err != nil {
		return 0, err
	}
	return len(prog.Inst), nil
}

func (c compiledExemptions) match(metric string) (string, bool) {
	if c.exact[metric] {
		return "exact " + metric, true
	}
	for _, p := range c.prefix {
		if strings.HasPrefix(metric, p) {
			return "prefix " + p, true
		}
	}
	for _, re := range c.regex {
		if re.MatchString(metric) {
			return "regex " + re.String(), true
		}
	}
	return "", false
}

// tenantState is what Store keeps per tenant.
type tenantState struct {
	Rules      []Applied  `json:"rules"`
	Exemptions Exemptions `json:"exemptions"`
}
