// Package web is cardguard's dashboard: an overview of tenants against their
// limits, each tenant's metrics by series with their query usage, one metric's
// labels, and a form that edits a tenant's limits through the limits API.
//
// Everything is embedded in the binary and works offline: HTML is rendered on the
// server (html/template, bars and charts as inline SVG) and a small script with no
// dependencies loads it. The package reads the rest of cardguard only through the
// small interfaces it declares (Tenants, Metrics, Limits).
//
// # Auth
//
// The pages themselves (shell, script, style) carry no data and are public. All
// data comes from the fragment routes, which Options.Protect guards: cardguard
// passes its admin check there, so with auth on only the admin token sees the
// dashboard, and a tenant token gets 403 (the dashboard lists every tenant, and a
// tenant's own view is the JSON API, which tenant tokens may read). The user types
// the token into the token field of the page; the script keeps it in
// sessionStorage (gone when the tab closes, never in a cookie or the URL) and sends
// it as "Authorization: Bearer" with every fragment request and every call to the
// limits API.
//
// # Routes
//
// Relative to where the handler is mounted (cardguard: /ui):
//
//	GET /                     overview (shell)
//	GET /tenant?tenant=T&q=&sort=&order=&page=  tenant's metrics (shell)
//	GET /metric?tenant=T&metric=M               one metric (shell)
//	GET /limits?tenant=T                        limits form (shell)
//	GET /fragment/{overview,tenant,metric,limits}?...  the data, as HTML (protected)
//	GET /static/...           script, style, icon
//
// Page state lives in the URL query, so a link shows the same page to whoever has
// the token.
package web

import (
	"bytes"
	"cmp"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Options configure a UI. Tenants, Metrics and Limits are required.
type Options struct {
	// Base is the path the handler is mounted at, without a trailing slash
	// (default "/ui"); the handler itself expects the prefix stripped.
	Base string
	// LimitsAPI is the URL path of the limits API that the form PATCHes, one tenant
	// appended (default "/api/cardguard/v1/limits").
	LimitsAPI string
	Tenants   Tenants
	Metrics   Metrics
	Limits    Limits
	// Costs fills the tenant page's "Costly queries" panel; nil leaves it out.
	Costs Costs
	// Adaptive fills the recommendations page (adaptive.go); nil leaves it out.
	Adaptive Adaptive
	// AdaptiveAPI is the URL path of the recommendations API, a tenant appended
	// (default "/api/cardguard/v1/recommendations/tenants").
	AdaptiveAPI string
	// History draws rejections over time on the overview; nil leaves the chart out.
	History *History
	// Protect wraps the data routes; nil leaves them open.
	Protect func(http.Handler) http.Handler
	// PageSize is the number of metrics per tenant page (default 100).
	PageSize int
	// Now is the clock for "5 min ago" (default time.Now).
	Now func() time.Time
}

// UI is the dashboard handler. It is safe for concurrent use.
type UI struct {
	o      Options
	tmpl   *template.Template
	shell  *template.Template
	mux    *http.ServeMux
	static http.Handler
}

// New builds the dashboard.
func New(o Options) (*UI, error) {
	if o.Tenants == nil || o.Metrics == nil || o.Limits == nil {
		return nil, fmt.Errorf("web: Tenants, Metrics and Limits are required")
	}
	o.Base = strings.TrimSuffix(cmp.Or(o.Base, "/ui"), "/")
	o.LimitsAPI = strings.TrimSuffix(cmp.Or(o.LimitsAPI, "/api/cardguard/v1/limits"), "/")
	o.AdaptiveAPI = strings.TrimSuffix(cmp.Or(o.AdaptiveAPI, "/api/cardguard/v1/recommendations/tenants"), "/")
	if o.PageSize <= 0 {
		o.PageSize = 100
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Protect == nil {
		o.Protect = func(h http.Handler) http.Handler { return h }
	}
	u := &UI{o: o}
	var err error
	u.tmpl, err = template.New("pages").Funcs(u.funcs()).Funcs(u.adaptiveFuncs()).ParseFS(templateFS, "templates/pages.html", "templates/adaptive.html")
	if err != nil {
		return nil, err
	}
	u.shell, err = template.New("shell").ParseFS(templateFS, "templates/shell.html")
	if err != nil {
		return nil, err
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	u.static = http.StripPrefix("/static/", http.FileServerFS(sub))

	m := http.NewServeMux()
	for _, p := range []string{"/{$}", "/tenant", "/metric", "/limits"} {
		m.HandleFunc("GET "+p, u.serveShell)
	}
	m.Handle("GET /static/", http.HandlerFunc(u.serveStatic))
	frag := func(f func(*http.Request) (int, string, any)) http.Handler {
		return o.Protect(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			status, name, data := f(r)
			u.render(w, status, name, data)
		}))
	}
	m.Handle("GET /fragment/overview", frag(u.overview))
	m.Handle("GET /fragment/tenant", frag(u.tenantPage))
	m.Handle("GET /fragment/metric", frag(u.metricPage))
	m.Handle("GET /fragment/limits", frag(u.limitsPage))
	u.adaptiveRoutes(m, frag)
	u.mux = m
	return u, nil
}

// ServeHTTP serves the dashboard; mount it with the Base prefix stripped.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	u.mux.ServeHTTP(w, r)
}

func (u *UI) serveShell(w http.ResponseWriter, _ *http.Request) {
	var buf bytes.Buffer
	if err := u.shell.ExecuteTemplate(&buf, "shell.html", struct{ Base string }{u.o.Base}); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(buf.Bytes())
}

func (u *UI) serveStatic(w http.ResponseWriter, r *http.Request) {
	// The files change only with the binary; revalidating is cheap and keeps an
	// upgraded cardguard from running an old script.
	w.Header().Set("Cache-Control", "no-cache")
	u.static.ServeHTTP(w, r)
}

// render writes one fragment: status, template name and its data.
func (u *UI) render(w http.ResponseWriter, status int, name string, data any) {
	var buf bytes.Buffer
	if err := u.tmpl.ExecuteTemplate(&buf, name, data); err != nil {
		http.Error(w, "render "+name+": "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

type errorView struct {
	Title   string
	Message string
	Base    string
}

func (u *UI) errorPage(status int, title, msg string) (int, string, any) {
	return status, "error", errorView{Title: title, Message: msg, Base: u.o.Base}
}

func (u *UI) tenantParam(r *http.Request) (tenant.ID, string, bool) {
	s := r.URL.Query().Get("tenant")
	t, err := tenant.Parse(s)
	if err != nil {
		return t, fmt.Sprintf("tenant %q: %v", clip(s, 64), err), false
	}
	return t, "", true
}

// link builds base+page?k=v&... leaving out empty values, in the order given, so
// that the same state always gives the same URL.
func (u *UI) link(page string, kv ...string) string {
	var b strings.Builder
	b.WriteString(u.o.Base)
	b.WriteString(page)
	sep := byte('?')
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			continue
		}
		b.WriteByte(sep)
		sep = '&'
		b.WriteString(queryEscape(kv[i]))
		b.WriteByte('=')
		b.WriteString(queryEscape(kv[i+1]))
	}
	return b.String()
}

func queryEscape(s string) string {
	// Keep the tenant's colon readable in shared links.
	return strings.ReplaceAll(url.QueryEscape(s), "%3A", ":")
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func atoiDefault(s string, def int) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return def
	}
	return n
}

func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
