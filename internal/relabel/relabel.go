package relabel

import (
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

// hashModCacheMax bounds the precomputed hashmod result strings per rule, so that
// the common small moduli never allocate a string per series.
const hashModCacheMax = 1024

// Rules is a compiled list of relabeling rules. It is immutable after Compile and
// safe for concurrent use. A nil *Rules applies no rules.
type Rules struct {
	rules []rule
	pool  sync.Pool // *scratch
}

type selector []*labels.Matcher

func (s selector) matches(ls []prompb.Label) bool {
	for _, m := range s {
		if !m.Matches(get(ls, m.Name)) {
			return false
		}
	}
	return true
}

type rule struct {
	action       Action
	ifs          []selector
	sources      []string
	sep          string
	re           *regexp.Regexp
	lit          literals // set when the regex is plain text: matched without the regex engine
	reDefault    bool     // regex is "(.*)": always matches, $1 is the whole input
	modulus      uint64
	target       string
	targetHasVar bool
	repl         string
	replHasVar   bool
	hashStrs     []string
}

// scratch holds per-call buffers; pooled so that Apply allocates nothing in
// steady state.
type scratch struct {
	val    []byte
	target []byte
	res    []byte
	snap   []prompb.Label
}

// Compile validates and compiles cfgs. The result does not retain cfgs.
func Compile(cfgs []Config) (*Rules, error) {
	r := &Rules{rules: make([]rule, 0, len(cfgs))}
	for i := range cfgs {
		ru, err := compileRule(&cfgs[i])
		if err != nil {
			return nil, fmt.Errorf("relabel rule %d: %w", i, err)
		}
		r.rules = append(r.rules, ru)
	}
	r.pool.New = func() any { return new(scratch) }
	return r, nil
}

func compileRule(c *Config) (rule, error) {
	if err := c.Validate(); err != nil {
		return rule{}, err
	}
	re, err := compileRegex(c.Regex)
	if err != nil {
		return rule{}, err
	}
	ifs, err := compileIf(c.If)
	if err != nil {
		return rule{}, err
	}
	ru := rule{
		action:       c.Action,
		ifs:          ifs,
		sources:      append([]string(nil), c.SourceLabels...),
		sep:          c.Separator,
		re:           re,
		lit:          literalsOf(c.Regex),
		reDefault:    c.Regex == DefaultRegex,
		modulus:      c.Modulus,
		target:       c.TargetLabel,
		targetHasVar: strings.Contains(c.TargetLabel, "$"),
		repl:         c.Replacement,
		replHasVar:   strings.Contains(c.Replacement, "$"),
	}
	switch ru.action {
	case DropMetrics:
		ru.action, ru.sources = Drop, []string{model.MetricNameLabel}
	case KeepMetrics:
		ru.action, ru.sources = Keep, []string{model.MetricNameLabel}
	case HashMod:
		if ru.modulus <= hashModCacheMax {
			ru.hashStrs = make([]string, ru.modulus)
			for i := range ru.hashStrs {
				ru.hashStrs[i] = strconv.Itoa(i)
			}
		}
	}
	return ru, nil
}

// Len returns the number of rules.
func (r *Rules) Len() int {
	if r == nil {
		return 0
	}
	return len(r.rules)
}

// Apply runs the rules in order over labels, which must be sorted by name and
// unique (as remote write requires); on unsorted input the result is unspecified
// but Apply does not panic. buf is caller-owned scratch that must not overlap
// labels.
//
// When no rule changes anything, Apply returns labels itself, keep=true,
// changed=false, and allocates nothing. Otherwise out is built in buf (grown if
// needed; keep it as the next call's buf), sorted by name; its strings may point
// into labels' strings, so out is valid as long as labels' strings are. keep is
// false when a rule drops the series or no label is left (VictoriaMetrics drops
// empty label sets); out is then empty and changed is true.
func (r *Rules) Apply(labels, buf []prompb.Label) (out []prompb.Label, keep, changed bool) {
	if r == nil || len(r.rules) == 0 {
		return labels, true, false
	}
	sc := r.pool.Get().(*scratch)
	s := state{cur: labels, buf: buf[:0], sc: sc}
	keep = true
	for i := range r.rules {
		if !r.rules[i].apply(&s) {
			keep = false
			break
		}
	}
	sc.snap = sc.snap[:0]
	r.pool.Put(sc)
	if !keep || len(s.cur) == 0 {
		if s.owned {
			return s.cur[:0], false, true
		}
		return s.buf[:0], false, true
	}
	if !s.owned || equal(s.cur, labels) {
		return labels, true, false
	}
	return s.cur, true, true
}

// state is the label set as the rules see it: labels until the first change,
// then buf.
type state struct {
	cur   []prompb.Label
	buf   []prompb.Label
	owned bool
	sc    *scratch
}

func (s *state) own() {
	if !s.owned {
		s.cur = append(s.buf[:0], s.cur...)
		s.owned = true
	}
}

// set writes name=value; an empty value deletes, as in Prometheus. nameStable
// and valueStable say whether the strings may be kept as they are; otherwise they
// point into scratch memory and are cloned when stored.
func (s *state) set(name string, nameStable bool, value string, valueStable bool) {
	if value == "" {
		s.del(name)
		return
	}
	i := 0
	for ; i < len(s.cur); i++ {
		if s.cur[i].Name >= name {
			break
		}
	}
	found := i < len(s.cur) && s.cur[i].Name == name
	if found && s.cur[i].Value == value {
		return
	}
	s.own()
	if !valueStable {
		value = strings.Clone(value)
	}
	if found {
		s.cur[i].Value = value
		return
	}
	if !nameStable {
		name = strings.Clone(name)
	}
	s.cur = append(s.cur, prompb.Label{})
	copy(s.cur[i+1:], s.cur[i:])
	s.cur[i] = prompb.Label{Name: name, Value: value}
}

func (s *state) del(name string) {
	for i := range s.cur {
		if s.cur[i].Name == name {
			s.own()
			s.cur = append(s.cur[:i], s.cur[i+1:]...)
			return
		}
	}
}

func get(ls []prompb.Label, name string) string {
	for i := range ls {
		if ls[i].Name == name {
			return ls[i].Value
		}
	}
	return ""
}

func equal(a, b []prompb.Label) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// bstr views b as a string without copying; the result must not outlive the
// next change of b and must be cloned before it is stored.
func bstr(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

func sameData(a, b string) bool { return unsafe.StringData(a) == unsafe.StringData(b) }

// value joins the source label values. stable is false when the result lives
// in scratch memory.
func (ru *rule) value(s *state) (val string, stable bool) {
	switch len(ru.sources) {
	case 0:
		return "", true
	case 1:
		return get(s.cur, ru.sources[0]), true
	}
	b := s.sc.val[:0]
	for i, n := range ru.sources {
		if i > 0 {
			b = append(b, ru.sep...)
		}
		b = append(b, get(s.cur, n)...)
	}
	s.sc.val = b
	return bstr(b), false
}

// apply runs one rule and reports whether the series is kept.
func (ru *rule) apply(s *state) bool {
	if len(ru.ifs) > 0 {
		matched := false
		for _, sel := range ru.ifs {
			if sel.matches(s.cur) {
				matched = true
				break
			}
		}
		if !matched {
			// As in VictoriaMetrics: `keep` with a non-matching `if` drops.
			return ru.action != Keep
		}
	}
	switch ru.action {
	case Drop:
		val, _ := ru.value(s)
		return !ru.match(val)
	case Keep:
		val, _ := ru.value(s)
		return ru.match(val)
	case DropEqual:
		val, _ := ru.value(s)
		return get(s.cur, ru.target) != val
	case KeepEqual:
		val, _ := ru.value(s)
		return get(s.cur, ru.target) == val
	case Replace:
		ru.replace(s)
	case Lowercase:
		val, stable := ru.value(s)
		v := strings.ToLower(val)
		s.set(ru.target, true, v, stable || !sameData(v, val))
	case Uppercase:
		val, stable := ru.value(s)
		v := strings.ToUpper(val)
		s.set(ru.target, true, v, stable || !sameData(v, val))
	case HashMod:
		val, _ := ru.value(s)
		sum := md5.Sum(append(s.sc.res[:0], val...))
		// The last 8 bytes, as Prometheus does for compatibility with its
		// earlier versions.
		mod := binary.BigEndian.Uint64(sum[8:]) % ru.modulus
		if mod < uint64(len(ru.hashStrs)) {
			s.set(ru.target, true, ru.hashStrs[mod], true)
		} else {
			s.set(ru.target, true, strconv.FormatUint(mod, 10), true)
		}
	case LabelMap:
		ru.labelMap(s)
	case LabelDrop:
		ru.filterNames(s, false)
	case LabelKeep:
		ru.filterNames(s, true)
	}
	return true
}

func (ru *rule) replace(s *state) {
	val, stable := ru.value(s)
	if !ru.targetHasVar && !ru.replHasVar {
		// No template: only whether the regex matches matters. This also
		// covers Prometheus' fast path for an empty value and the default regex.
		if ru.reDefault || ru.match(val) {
			s.set(ru.target, true, ru.repl, true)
		}
		return
	}
	var idx []int
	var defIdx [4]int
	if ru.reDefault {
		defIdx = [4]int{0, len(val), 0, len(val)}
		idx = defIdx[:]
	} else {
		if !ru.match(val) {
			return
		}
		idx = ru.re.FindStringSubmatchIndex(val)
		if idx == nil {
			return
		}
	}
	target := ru.target
	targetStable := true
	if ru.targetHasVar {
		s.sc.target = ru.re.ExpandString(s.sc.target[:0], ru.target, val, idx)
		target = bstr(s.sc.target)
		targetStable = false
		if !validLabelName(target) {
			return
		}
	}
	if ru.reDefault && ru.repl == DefaultReplacement {
		// "$1" of "(.*)" is the value itself.
		s.set(target, targetStable, val, stable)
		return
	}
	s.sc.res = ru.re.ExpandString(s.sc.res[:0], ru.repl, val, idx)
	res := bstr(s.sc.res)
	s.set(target, targetStable, res, false)
}

func (ru *rule) labelMap(s *state) {
	// Prometheus ranges over a snapshot of the labels, so names produced by
	// this rule are not mapped again by it.
	snap := append(s.sc.snap[:0], s.cur...)
	s.sc.snap = snap
	for _, l := range snap {
		if !ru.match(l.Name) {
			continue
		}
		switch {
		case !ru.replHasVar:
			s.set(ru.repl, true, l.Value, true)
		case ru.reDefault && ru.repl == DefaultReplacement:
			s.set(l.Name, true, l.Value, true)
		default:
			idx := ru.re.FindStringSubmatchIndex(l.Name)
			if idx == nil {
				continue
			}
			s.sc.target = ru.re.ExpandString(s.sc.target[:0], ru.repl, l.Name, idx)
			name := bstr(s.sc.target)
			if name == "" {
				// Prometheus would set a label with an empty name; such a
				// series is invalid remote write, so skip it.
				continue
			}
			s.set(name, false, l.Value, true)
		}
	}
}

// filterNames deletes the labels whose names match (keepMatching false) or do
// not match (keepMatching true) the regex.
func (ru *rule) filterNames(s *state, keepMatching bool) {
	first := -1
	for i := range s.cur {
		if ru.match(s.cur[i].Name) != keepMatching {
			first = i
			break
		}
	}
	if first < 0 {
		return
	}
	s.own()
	n := first
	for i := first + 1; i < len(s.cur); i++ {
		if ru.match(s.cur[i].Name) == keepMatching {
			s.cur[n] = s.cur[i]
			n++
		}
	}
	clear(s.cur[n:])
	s.cur = s.cur[:n]
}
