package readpath

import (
	"net/url"
	"strings"
)

// CleanAPIPath checks the part of a read path below the tenant's Prometheus root,
// as the router gives it: decoded, unless the request's path had escapes that
// decode to something else (then raw). Anything that a server or VictoriaMetrics
// could resolve to another place — dot segments, empty segments, slashes or
// backslashes, encoded or not — and control bytes such as NUL are refused, so that
// a request can never leave the tenant it was authorised for.
func CleanAPIPath(rest string) (string, bool) {
	if rest == "" || strings.HasPrefix(rest, "/") || strings.Contains(rest, "//") || strings.ContainsRune(rest, '\\') {
		return "", false
	}
	lower := strings.ToLower(rest)
	if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") || strings.Contains(lower, "%2e") || strings.Contains(lower, "%00") {
		return "", false
	}
	p, err := url.PathUnescape(rest)
	if err != nil {
		return "", false
	}
	// Checked on the decoded form too: the router hands over "\x00", not "%00",
	// when the request path had no other escapes.
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == 0x7f {
			return "", false
		}
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "." || seg == ".." {
			return "", false
		}
	}
	return p, true
}
