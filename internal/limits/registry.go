package limits

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"

	"github.com/cardguard/cardguard/internal/tenant"
)

// ErrNoOverride is returned by Registry.Delete for a tenant without an API override.
var ErrNoOverride = errors.New("tenant has no override set through the API")

// Override is what a tenant's limits are made of besides the defaults.
type Override struct {
	// File is the tenant's override from the config file, already decoded on top of
	// the defaults; nil when there is none.
	File *Limits `json:"file,omitempty"`
	// API is the partial JSON object set through the limits API, applied on top of
	// File (or the defaults); nil when there is none.
	API json.RawMessage `json:"api,omitempty"`
	// APIError says why API is not applied, when it no longer fits the config (for
	// example after a reload, or when another replica stored something invalid).
	APIError string `json:"api_error,omitempty"`
}

// Store persists the overrides set through the API. Overrides are partial JSON
// objects, so that a tenant follows later changes of the defaults for every field it
// did not set. Implementations must be safe for concurrent use.
type Store interface {
	// Load returns every stored override.
	Load() (map[tenant.ID]json.RawMessage, error)
	// Save stores t's override, or deletes it when override is nil.
	Save(t tenant.ID, override json.RawMessage) error
}

type snapshot struct {
	defaults  *Limits
	effective map[tenant.ID]*Limits
	apiErrs   map[tenant.ID]string
}

// Registry holds the defaults and the per-tenant overrides. Effective limits are
// built in this order, later winning: defaults, the tenant's override from the config
// file, the tenant's override from the API. An API override therefore survives a
// config reload and keeps winning over the file until it is deleted.
//
// For is lock-free; changes are serialised, persisted through the Store first and then
// published at once, so the next For sees them. Registry is safe for concurrent use.
type Registry struct {
	store  Store
	logger *slog.Logger

	mu       sync.Mutex // serialises changes; guards the fields below
	defaults Limits
	file     map[tenant.ID]Limits
	api      map[tenant.ID]json.RawMessage

	snap atomic.Pointer[snapshot]
}

// NewRegistry validates defaults and the file overrides and loads the API overrides
// from store (nil: not persisted). A stored override that does not fit is logged,
// shown by Overrides with APIError, and not applied; it is not an error, so that a
// bad record cannot keep cardguard from starting.
func NewRegistry(defaults Limits, fileOverrides map[tenant.ID]Limits, store Store, logger *slog.Logger) (*Registry, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Registry{store: store, logger: logger, api: map[tenant.ID]json.RawMessage{}}
	if err := validateConfig(defaults, fileOverrides); err != nil {
		return nil, err
	}
	r.defaults, r.file = defaults.Clone(), cloneFile(fileOverrides)
	if store != nil {
		m, err := store.Load()
		if err != nil {
			return nil, fmt.Errorf("load limits overrides: %w", err)
		}
		r.api = maps.Clone(m)
	}
	r.publish()
	return r, nil
}

func validateConfig(defaults Limits, file map[tenant.ID]Limits) error {
	if err := defaults.Validate(); err != nil {
		return fmt.Errorf("limits defaults: %w", err)
	}
	for t, l := range file {
		if err := l.Validate(); err != nil {
			return fmt.Errorf("limits override for tenant %s: %w", t, err)
		}
	}
	return nil
}

func cloneFile(m map[tenant.ID]Limits) map[tenant.ID]Limits {
	c := make(map[tenant.ID]Limits, len(m))
	for t, l := range m {
		c[t] = l.Clone()
	}
	return c
}

// For returns the effective limits of t. The result is shared: never modify it. It is
// lock-free and does not allocate.
func (r *Registry) For(t tenant.ID) *Limits {
	s := r.snap.Load()
	if l, ok := s.effective[t]; ok {
		return l
	}
	return s.defaults
}

// Defaults returns a copy of the defaults.
func (r *Registry) Defaults() Limits { return r.snap.Load().defaults.Clone() }

// Overrides returns every tenant with an override from the file or the API.
func (r *Registry) Overrides() map[tenant.ID]Override {
	r.mu.Lock()
	defer r.mu.Unlock()
	errs := r.snap.Load().apiErrs
	out := make(map[tenant.ID]Override, len(r.file)+len(r.api))
	for t := range r.file {
		out[t] = r.overrideLocked(t, errs)
	}
	for t := range r.api {
		out[t] = r.overrideLocked(t, errs)
	}
	return out
}

// Override returns t's override and whether it has one.
func (r *Registry) Override(t tenant.ID) (Override, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, inFile := r.file[t]
	_, inAPI := r.api[t]
	return r.overrideLocked(t, r.snap.Load().apiErrs), inFile || inAPI
}

func (r *Registry) overrideLocked(t tenant.ID, errs map[tenant.ID]string) Override {
	var o Override
	if l, ok := r.file[t]; ok {
		c := l.Clone()
		o.File = &c
	}
	if p, ok := r.api[t]; ok {
		o.API = bytes.Clone(p)
		o.APIError = errs[t]
	}
	return o
}

// Set merges patch, a partial JSON object, into t's API override (JSON merge patch,
// RFC 7386: a null removes a field, which then follows the file or the defaults
// again), validates the result, persists it and applies it. Problems with the patch
// are *FieldError; anything else is a store failure, and then nothing changed.
func (r *Registry) Set(t tenant.ID, patch json.RawMessage) (Limits, error) {
	return r.change(t, patch, true)
}

// Replace is Set with t's API override replaced by override instead of merged.
func (r *Registry) Replace(t tenant.ID, override json.RawMessage) (Limits, error) {
	return r.change(t, override, false)
}

func (r *Registry) change(t tenant.ID, body json.RawMessage, merge bool) (Limits, error) {
	// Check the body itself first: merging drops null fields, unknown ones included.
	scratch := Default()
	if err := decodeJSONStrict(body, &scratch); err != nil {
		return Limits{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var target json.RawMessage
	if merge {
		target = r.api[t]
	}
	next, err := mergePatch(target, body)
	if err != nil {
		return Limits{}, err
	}
	eff, err := DecodeJSON(r.baseLocked(t), next)
	if err != nil {
		return Limits{}, err
	}
	if r.store != nil {
		if err := r.store.Save(t, next); err != nil {
			return Limits{}, fmt.Errorf("persist limits override of tenant %s: %w", t, err)
		}
	}
	r.api[t] = next
	r.publish()
	return eff, nil
}

// Delete removes t's API override, persists that and returns the limits t has now.
// ErrNoOverride says there was none (a file override cannot be deleted here).
func (r *Registry) Delete(t tenant.ID) (Limits, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.api[t]; !ok {
		return Limits{}, ErrNoOverride
	}
	if r.store != nil {
		if err := r.store.Save(t, nil); err != nil {
			return Limits{}, fmt.Errorf("persist deletion of limits override of tenant %s: %w", t, err)
		}
	}
	delete(r.api, t)
	r.publish()
	return r.baseLocked(t).Clone(), nil
}

// Reload replaces the defaults and the file overrides, as on SIGHUP; API overrides stay
// and are applied on top again. Invalid configuration is an error and changes nothing.
func (r *Registry) Reload(defaults Limits, fileOverrides map[tenant.ID]Limits) error {
	if err := validateConfig(defaults, fileOverrides); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.defaults, r.file = defaults.Clone(), cloneFile(fileOverrides)
	r.publish()
	return nil
}

// Apply replaces every API override by overrides, without persisting: this is how a
// change stored by another replica reaches this one. Overrides that do not fit are
// logged and left unapplied, as in NewRegistry.
func (r *Registry) Apply(overrides map[tenant.ID]json.RawMessage) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.api = maps.Clone(overrides)
	if r.api == nil {
		r.api = map[tenant.ID]json.RawMessage{}
	}
	r.publish()
}

// ReloadStore loads the API overrides from the store and applies them: the hook for a
// store that can tell when another replica changed something.
func (r *Registry) ReloadStore() error {
	if r.store == nil {
		return nil
	}
	m, err := r.store.Load()
	if err != nil {
		return fmt.Errorf("load limits overrides: %w", err)
	}
	r.Apply(m)
	return nil
}

func (r *Registry) baseLocked(t tenant.ID) Limits {
	if l, ok := r.file[t]; ok {
		return l
	}
	return r.defaults
}

// publish builds a new snapshot from the fields guarded by mu and makes it current.
func (r *Registry) publish() {
	def := r.defaults.Clone()
	s := &snapshot{
		defaults:  &def,
		effective: make(map[tenant.ID]*Limits, len(r.file)+len(r.api)),
		apiErrs:   map[tenant.ID]string{},
	}
	for t, l := range r.file {
		c := l.Clone()
		s.effective[t] = &c
	}
	for t, p := range r.api {
		l, err := DecodeJSON(r.baseLocked(t), p)
		if err != nil {
			s.apiErrs[t] = err.Error()
			r.logger.Warn("limits override from the API not applied", "tenant", t.String(), "err", err)
			continue
		}
		s.effective[t] = &l
	}
	r.snap.Store(s)
}

// mergePatch applies the JSON merge patch (RFC 7386) patch to target (nil: {}) and
// returns the result as compact JSON with sorted keys.
func mergePatch(target, patch json.RawMessage) (json.RawMessage, error) {
	t := map[string]any{}
	if len(target) > 0 {
		if err := decodeObject(target, &t); err != nil {
			return nil, err
		}
	}
	var p map[string]any
	if err := decodeObject(patch, &p); err != nil {
		return nil, err
	}
	mergeObjects(t, p)
	b, err := json.Marshal(t)
	if err != nil {
		return nil, &FieldError{Reason: "invalid JSON: " + err.Error()}
	}
	return b, nil
}

func decodeObject(b []byte, v *map[string]any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // keep numbers as written
	if err := dec.Decode(v); err != nil || *v == nil {
		return &FieldError{Reason: "want a JSON object"}
	}
	return nil
}

func mergeObjects(t, p map[string]any) {
	for k, v := range p {
		switch pv := v.(type) {
		case nil:
			delete(t, k)
		case map[string]any:
			tv, ok := t[k].(map[string]any)
			if !ok {
				tv = map[string]any{}
			}
			mergeObjects(tv, pv)
			t[k] = tv
		default:
			t[k] = v
		}
	}
}
