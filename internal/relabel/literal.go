package relabel

import "regexp/syntax"

// literals is the set of strings a regex matches when it is plain text or an
// alternation of plain texts ("az", "pod|instance"): the common labeldrop and
// drop_metrics rules. Matching them by comparison instead of the regex engine
// makes such rules several times cheaper on the write path.
type literals struct {
	ok  bool
	one string
	set map[string]struct{}
}

// literalsOf returns the literal set of expr (as written, before anchoring), or
// a zero literals when the regex is anything more than plain text.
func literalsOf(expr string) literals {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return literals{}
	}
	re = uncapture(re.Simplify())
	var strs []string
	switch re.Op {
	case syntax.OpLiteral:
		if re.Flags&syntax.FoldCase != 0 {
			return literals{}
		}
		strs = []string{string(re.Rune)}
	case syntax.OpEmptyMatch:
		strs = []string{""}
	case syntax.OpAlternate:
		for _, sub := range re.Sub {
			sub = uncapture(sub)
			switch {
			case sub.Op == syntax.OpLiteral && sub.Flags&syntax.FoldCase == 0:
				strs = append(strs, string(sub.Rune))
			case sub.Op == syntax.OpEmptyMatch:
				strs = append(strs, "")
			default:
				return literals{}
			}
		}
	default:
		return literals{}
	}
	if len(strs) == 1 {
		return literals{ok: true, one: strs[0]}
	}
	set := make(map[string]struct{}, len(strs))
	for _, s := range strs {
		set[s] = struct{}{}
	}
	return literals{ok: true, set: set}
}

// uncapture strips capture groups: they matter for $n references, which the
// fast path never serves, not for whether a string matches.
func uncapture(re *syntax.Regexp) *syntax.Regexp {
	for re.Op == syntax.OpCapture && len(re.Sub) == 1 {
		re = re.Sub[0]
	}
	return re
}

// match reports whether the rule's anchored regex matches s.
func (ru *rule) match(s string) bool {
	if ru.lit.ok {
		if ru.lit.set == nil {
			return s == ru.lit.one
		}
		_, ok := ru.lit.set[s]
		return ok
	}
	return ru.re.MatchString(s)
}
