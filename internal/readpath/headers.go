package readpath

import (
	"net"
	"net/http"
	"strings"
)

// forwardedHeaders are the request headers VictoriaMetrics may use on a read:
// content negotiation and the body's type. Everything else stays with cardguard:
// the client's credentials (Authorization, Cookie), tenancy headers that an
// upstream or a proxy in front of it might honour (AccountID, ProjectID,
// X-Scope-OrgID, ...), and Grafana's attribution headers, which cardguard records
// itself and VictoriaMetrics ignores.
var forwardedHeaders = []string{"Accept", "Accept-Encoding", "Content-Type", "User-Agent"}

// forwardHeaders builds the upstream request's headers from the client's.
//
// X-Forwarded-For gets the client's address appended to what the client sent (the
// last entry is the one cardguard vouches for); X-Forwarded-Proto says how the
// client reached cardguard. X-Forwarded-Host is not set: the client's Host header is
// whatever the client chose to send, and VictoriaMetrics has no use for it.
func forwardHeaders(in *http.Request) http.Header {
	h := make(http.Header, len(forwardedHeaders)+2)
	for _, k := range forwardedHeaders {
		if v := in.Header.Values(k); len(v) > 0 {
			h[k] = append([]string(nil), v...)
		}
	}
	if ip, _, err := net.SplitHostPort(in.RemoteAddr); err == nil {
		if prior := in.Header.Values("X-Forwarded-For"); len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		h.Set("X-Forwarded-For", ip)
	}
	proto := "http"
	if in.TLS != nil {
		proto = "https"
	}
	h.Set("X-Forwarded-Proto", proto)
	return h
}
