// Package auth maps request credentials to a role: the admin, one tenant, or nobody.
//
// Tokens come as "Authorization: Bearer <token>" or as the password of HTTP basic auth
// (the user name is ignored), the two forms Prometheus remote_write and Grafana's
// datasource can send. Tokens are compared in constant time and never logged.
//
// With no tokens configured, auth is off: every request may do everything, which is
// what a single-team installation behind its own network boundary wants.
package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/cardguard/cardguard/internal/tenant"
)

// Config is the auth section of the config file.
type Config struct {
	// AdminToken grants every admin endpoint and every tenant.
	AdminToken string `yaml:"admin_token"`
	// Tenants maps tokens to the single tenant each may read and write.
	Tenants []TenantToken `yaml:"tenants"`
}

// TenantToken binds one token to one tenant.
type TenantToken struct {
	Token  string    `yaml:"token"`
	Tenant tenant.ID `yaml:"tenant"`
}

// Validate reports configuration mistakes that would weaken isolation.
func (c *Config) Validate() error {
	seen := make(map[string]bool, len(c.Tenants))
	for i, tt := range c.Tenants {
		if tt.Token == "" {
			return fmt.Errorf("auth.tenants[%d]: empty token", i)
		}
		if tt.Token == c.AdminToken {
			return fmt.Errorf("auth.tenants[%d]: token equals the admin token", i)
		}
		if seen[tt.Token] {
			return fmt.Errorf("auth.tenants[%d]: token used for more than one tenant", i)
		}
		seen[tt.Token] = true
	}
	if c.AdminToken == "" && len(c.Tenants) > 0 {
		return errors.New("auth.admin_token is required when tenant tokens are set")
	}
	return nil
}

// Role is what a request may do.
type Role struct {
	Admin  bool
	Tenant tenant.ID // meaningful when HasTenant
	// HasTenant is true for a tenant token.
	HasTenant bool
}

// CanAccess reports whether the role may read or write tenant t.
func (r Role) CanAccess(t tenant.ID) bool { return r.Admin || (r.HasTenant && r.Tenant == t) }

type entry struct {
	sum    [sha256.Size]byte
	tenant tenant.ID
	admin  bool
}

// Authenticator resolves credentials. It is immutable after New and safe for
// concurrent use.
type Authenticator struct {
	entries []entry
}

// New builds an Authenticator; cfg must have passed Validate.
func New(cfg Config) *Authenticator {
	a := &Authenticator{}
	if cfg.AdminToken != "" {
		a.entries = append(a.entries, entry{sum: sha256.Sum256([]byte(cfg.AdminToken)), admin: true})
	}
	for _, tt := range cfg.Tenants {
		a.entries = append(a.entries, entry{sum: sha256.Sum256([]byte(tt.Token)), tenant: tt.Tenant})
	}
	return a
}

// Enabled reports whether any token is configured.
func (a *Authenticator) Enabled() bool { return len(a.entries) > 0 }

// ErrNoCredentials and ErrBadCredentials distinguish 401 causes for logs and metrics.
var (
	ErrNoCredentials  = errors.New("no credentials: send Authorization: Bearer <token>")
	ErrBadCredentials = errors.New("invalid credentials")
)

// Resolve returns the role of r. With auth off it returns the admin role.
func (a *Authenticator) Resolve(r *http.Request) (Role, error) {
	if !a.Enabled() {
		return Role{Admin: true}, nil
	}
	tok := token(r)
	if tok == "" {
		return Role{}, ErrNoCredentials
	}
	// Hashing first makes every comparison the same length; checking every entry
	// keeps the time independent of which one matches.
	sum := sha256.Sum256([]byte(tok))
	var found *entry
	for i := range a.entries {
		if subtle.ConstantTimeCompare(sum[:], a.entries[i].sum[:]) == 1 {
			found = &a.entries[i]
		}
	}
	if found == nil {
		return Role{}, ErrBadCredentials
	}
	if found.admin {
		return Role{Admin: true}, nil
	}
	return Role{Tenant: found.tenant, HasTenant: true}, nil
}

func token(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	if _, pass, ok := r.BasicAuth(); ok {
		return pass
	}
	return ""
}

// RequireAdmin is middleware for admin-only endpoints: 401 without valid
// credentials, 403 for a tenant token.
func (a *Authenticator) RequireAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		role, err := a.Resolve(r)
		if err != nil {
			Unauthorized(w, err)
			return
		}
		if !role.Admin {
			http.Error(w, "forbidden: this endpoint needs the admin token", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// RequireTenant is middleware for endpoints with a {tenant} URL parameter (chi): the
// admin or that tenant's own token may pass. A malformed tenant is a 400.
func (a *Authenticator) RequireTenant(param string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			t, err := tenant.Parse(chi.URLParam(r, param))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			role, err := a.Resolve(r)
			if err != nil {
				Unauthorized(w, err)
				return
			}
			if !role.CanAccess(t) {
				http.Error(w, "forbidden: token is not valid for tenant "+t.String(), http.StatusForbidden)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// Unauthorized writes a 401 with a WWW-Authenticate challenge.
func Unauthorized(w http.ResponseWriter, err error) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="cardguard"`)
	http.Error(w, "unauthorized: "+err.Error(), http.StatusUnauthorized)
}
