// Package upstream maps a tenant to the VictoriaMetrics URLs that serve it.
//
// Two layouts are supported:
//
//   - cluster: writes go to vminsert at /insert/<tenant>/prometheus/api/v1/write and
//     reads to vmselect at /select/<tenant>/prometheus/<path>; VictoriaMetrics keeps
//     tenants apart.
//   - single: one VictoriaMetrics node serves /api/v1/write and /prometheus/<path>. A
//     single node has no tenants, so by default every tenant shares the same data and
//     tenants are accounting units only. With TenantLabel set, cardguard separates
//     them itself: every write gets extra_label=<TenantLabel>=<tenant> and every read
//     extra_label=<TenantLabel>=<tenant>, which VictoriaMetrics applies as a filter.
//
// Clients' own extra_label and extra_filters arguments change what a tenant can see or
// write, so cardguard never passes them through (see StripTenantArgs).
package upstream

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
)

// Mode names an upstream layout.
const (
	ModeCluster = "cluster"
	ModeSingle  = "single"
)

// Config is the upstream section of the config file.
type Config struct {
	Mode string `yaml:"mode"`
	// URL is the single-node base URL, e.g. http://victoria-metrics:8428.
	URL string `yaml:"url"`
	// InsertURL and SelectURL are the cluster base URLs, e.g. http://vminsert:8480.
	InsertURL string `yaml:"insert_url"`
	SelectURL string `yaml:"select_url"`
	// TenantLabel, single mode only, separates tenants by a label (see package doc).
	TenantLabel string `yaml:"tenant_label"`
	// Timeout bounds one forwarded write. It must stay below Prometheus'
	// remote_timeout (30 s) so that cardguard answers 503 before the client gives up.
	Timeout time.Duration `yaml:"timeout"`
	// BearerToken, when set, is sent to VictoriaMetrics instead of the client's
	// credentials (which are cardguard's and never forwarded).
	BearerToken string `yaml:"bearer_token"`
}

// DefaultTimeout is the write timeout when none is configured.
const DefaultTimeout = 25 * time.Second

// Scheme builds upstream URLs. It is immutable and safe for concurrent use.
type Scheme struct {
	mode        string
	insert      *url.URL
	sel         *url.URL
	tenantLabel string
	timeout     time.Duration
	bearer      string
}

// New validates cfg and returns its Scheme.
func New(cfg Config) (*Scheme, error) {
	s := &Scheme{mode: cfg.Mode, tenantLabel: cfg.TenantLabel, timeout: cfg.Timeout, bearer: cfg.BearerToken}
	if s.timeout == 0 {
		s.timeout = DefaultTimeout
	}
	if s.timeout < 0 || s.timeout >= 30*time.Second {
		return nil, fmt.Errorf("upstream.timeout %s: must be positive and below Prometheus' 30s remote_timeout", s.timeout)
	}
	var err error
	switch cfg.Mode {
	case ModeSingle:
		if cfg.InsertURL != "" || cfg.SelectURL != "" {
			return nil, errors.New("upstream: insert_url and select_url are for mode cluster; single mode takes url")
		}
		if s.insert, err = parseBase("upstream.url", cfg.URL); err != nil {
			return nil, err
		}
		s.sel = s.insert
	case ModeCluster:
		if cfg.URL != "" {
			return nil, errors.New("upstream: url is for mode single; cluster mode takes insert_url and select_url")
		}
		if cfg.TenantLabel != "" {
			return nil, errors.New("upstream.tenant_label is for mode single: a cluster keeps tenants apart itself")
		}
		if s.insert, err = parseBase("upstream.insert_url", cfg.InsertURL); err != nil {
			return nil, err
		}
		if s.sel, err = parseBase("upstream.select_url", cfg.SelectURL); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("upstream.mode %q: want %q or %q", cfg.Mode, ModeCluster, ModeSingle)
	}
	return s, nil
}

func parseBase(field, raw string) (*url.URL, error) {
	if raw == "" {
		return nil, fmt.Errorf("%s is required", field)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("%s %q: want http(s)://host[:port][/prefix]", field, raw)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%s %q: must not have a query or fragment", field, raw)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// Mode returns the configured layout.
func (s *Scheme) Mode() string { return s.mode }

// Timeout returns the write timeout.
func (s *Scheme) Timeout() time.Duration { return s.timeout }

// BearerToken returns the token to present upstream, or "".
func (s *Scheme) BearerToken() string { return s.bearer }

// Isolated reports whether tenants' data are kept apart upstream.
func (s *Scheme) Isolated() bool { return s.mode == ModeCluster || s.tenantLabel != "" }

// WriteURL returns the remote-write URL for t.
func (s *Scheme) WriteURL(t tenant.ID) string {
	u := *s.insert
	if s.mode == ModeCluster {
		u.Path += "/insert/" + t.String() + "/prometheus/api/v1/write"
		return u.String()
	}
	u.Path += "/api/v1/write"
	if s.tenantLabel != "" {
		u.RawQuery = url.Values{"extra_label": {s.tenantLabel + "=" + t.String()}}.Encode()
	}
	return u.String()
}

// ReadURL returns the URL of the Prometheus API path apiPath (e.g.
// "api/v1/query", without a leading slash) for t, carrying query, with any
// client-supplied tenant-changing arguments removed and cardguard's own added.
func (s *Scheme) ReadURL(t tenant.ID, apiPath string, query url.Values) *url.URL {
	u := *s.sel
	if s.mode == ModeCluster {
		u.Path += "/select/" + t.String() + "/prometheus/" + apiPath
	} else {
		u.Path += "/prometheus/" + apiPath
	}
	StripTenantArgs(query)
	s.AddTenantArgs(t, query)
	u.RawQuery = query.Encode()
	return &u
}

// AddTenantArgs adds the arguments that confine a read or write to t (single mode
// with a tenant label); it does nothing otherwise.
func (s *Scheme) AddTenantArgs(t tenant.ID, args url.Values) {
	if s.mode == ModeSingle && s.tenantLabel != "" {
		args.Set("extra_label", s.tenantLabel+"="+t.String())
	}
}

// StripTenantArgs removes every argument VictoriaMetrics honours that would widen or
// change the set of series a request sees or writes.
func StripTenantArgs(args url.Values) {
	for k := range args {
		if isTenantArg(k) {
			delete(args, k)
		}
	}
}

func isTenantArg(k string) bool {
	k = strings.ToLower(k)
	return k == "extra_label" || k == "extra_label[]" || k == "extra_filters" || k == "extra_filters[]"
}
