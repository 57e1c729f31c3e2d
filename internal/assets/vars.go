package assets

import (
	"regexp"
	"strconv"
	"strings"
)

// variable is what a Grafana dashboard variable can stand for, as far as
// attribution needs: a number, or a set of metric or label names.
type variable struct {
	// numeric: every known value is a number: `> $threshold`, topk($n, ...).
	numeric bool
	// duration: an interval variable, or every value is a duration.
	duration bool
	// values are the known values (custom, constant, textbox, current); nil
	// when the values come from a query and are not known here.
	values []string
	// nameRegex, when a query lists metric names (metrics(re),
	// label_values(__name__)), is the regex of the names it can give.
	nameRegex string
}

// builtins are Grafana's global variables. Durations go where a duration fits;
// the rest are numbers or text.
var builtinDurations = map[string]bool{
	"__interval": true, "__rate_interval": true, "__range": true, "__auto": true,
}

// placeholder names a variable that stands where a metric or label name goes:
// a valid identifier in both, replaced after extraction (see fixup).
const placeholderPrefix = "__cardguard_var_"

// substitution is an expression with its variables replaced by something
// parseable, and the variables that stand for names.
type substitution struct {
	expr string
	// names maps a placeholder to the variable it replaced.
	names map[string]*variable
}

// grafanaVar matches Grafana's variable syntaxes: $name, ${name},
// ${name:format}, ${name.field} and [[name]], [[name:format]].
var grafanaVar = regexp.MustCompile(`\$([A-Za-z_]\w*)|\$\{([A-Za-z_]\w*)(?:[.:][^}]*)?\}|\[\[([A-Za-z_]\w*)(?::\w+)?\]\]`)

// substitute replaces Grafana variables in expr with values that parse and
// attribute conservatively:
//   - in a quoted string (a matcher value, a label_replace argument): .* ;
//   - in [...] (a range, a subquery): 5m ;
//   - elsewhere: a duration variable 5m, a numeric one 1, a builtin 1, and any
//     other a placeholder name, resolved after extraction to the names the
//     variable can take (or every name).
//
// $1 in label_replace is no variable name and stays. Variables vars does not
// define are added to it, standing for anything.
func substitute(expr string, vars map[string]*variable) substitution {
	out := substitution{names: map[string]*variable{}}
	locs := grafanaVar.FindAllStringSubmatchIndex(expr, -1)
	if len(locs) == 0 {
		out.expr = expr
		return out
	}
	var b strings.Builder
	last := 0
	for _, loc := range locs {
		name := ""
		for g := 1; g <= 3; g++ {
			if loc[2*g] >= 0 {
				name = expr[loc[2*g]:loc[2*g+1]]
			}
		}
		v, known := vars[name]
		builtin := strings.HasPrefix(name, "__")
		if !known {
			// A variable the file does not define (a library panel's, a
			// dashboard's ad hoc one): it may stand for anything.
			v = &variable{}
			if vars != nil && !builtin {
				vars[name] = v
			}
		}
		b.WriteString(expr[last:loc[0]])
		last = loc[1]
		inString, inBrackets := position(expr, loc[0])
		switch {
		case inString:
			b.WriteString(".*")
		case inBrackets || builtinDurations[name] || (known && v.duration):
			b.WriteString("5m")
		case builtin || v.numeric:
			b.WriteString("1")
		default:
			ph := placeholderPrefix + strconv.Itoa(len(out.names)) + "__"
			for p, pv := range out.names {
				if pv == v {
					ph = p
				}
			}
			out.names[ph] = v
			b.WriteString(ph)
		}
	}
	b.WriteString(expr[last:])
	out.expr = b.String()
	return out
}

// position tells whether position i of expr is inside a quoted string or
// inside [...] outside strings.
func position(expr string, i int) (inString, inBrackets bool) {
	var quote byte
	depth := 0
	for j := 0; j < i; j++ {
		c := expr[j]
		switch {
		case quote != 0:
			if c == '\\' && quote != '`' {
				j++
			} else if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'' || c == '`':
			quote = c
		case c == '[':
			depth++
		case c == ']':
			depth = max(depth-1, 0)
		}
	}
	return quote != 0, depth > 0
}

// isNumber tells whether s is a PromQL number.
func isNumber(s string) bool {
	_, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	return err == nil
}

// durationRE matches a Prometheus duration such as 5m or 1h30m.
var durationRE = regexp.MustCompile(`^(\d+(ms|s|m|h|d|w|y))+$`)

// classify sets numeric and duration from the known values.
func (v *variable) classify() {
	if len(v.values) == 0 {
		return
	}
	num, dur, n := true, true, 0
	for _, s := range v.values {
		if s == "$__all" || s == "All" || s == "" {
			continue
		}
		n++
		num = num && isNumber(s)
		dur = dur && durationRE.MatchString(s)
	}
	if n > 0 {
		v.numeric, v.duration = num, dur && !num
	}
}
