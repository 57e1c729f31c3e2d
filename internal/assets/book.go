// Package assets reads the static readers of metrics: Grafana dashboards and
// library panels, Prometheus and vmalert rule files. Whatever they query is in
// use even when nobody opened the dashboard or the rule has not fired through
// cardguard lately, so a metric one of them names is never "unused".
//
// Assets come from a directory (files at its top apply to every tenant, files
// in <dir>/<tenant>/ to that tenant, tenant as cardguard prints it, 1:0) that is
// re-read when a file changes, and from uploads through the API, kept under the
// data directory. Every expression is read with queryaudit.Extract, the query
// audit's own extractor, after Grafana variables are replaced by something
// parseable (see substitute).
package assets

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/cardguard/cardguard/internal/atomicfile"
	"github.com/cardguard/cardguard/internal/queryaudit"
	"github.com/cardguard/cardguard/internal/tenant"
)

// AssetRef is one place in an asset that reads a metric.
type AssetRef struct {
	// Kind is "dashboard", "library_panel" or "rule".
	Kind string `json:"kind"`
	// File is the asset: its path under the assets directory (1:0/nodes.json),
	// or uploaded/<name> for an upload.
	File string `json:"file"`
	// Title is the dashboard title or the rule group name.
	Title string `json:"title,omitempty"`
	// Panel is the panel title (or id), "variable <name>" for a dashboard
	// variable's query, or the library panel's name.
	Panel string `json:"panel,omitempty"`
	// Rule is the alerting or recording rule name.
	Rule string `json:"rule,omitempty"`
	// Expr is the expression as written, clipped to 512 bytes.
	Expr string `json:"expr"`
}

// AssetUse is what the assets of a tenant do with one metric.
type AssetUse struct {
	// Labels maps the label names the expressions use to how.
	Labels map[string]queryaudit.LabelUse
	// AllLabels: some expression returns the series with every label, or
	// compares all of them, or names a label through a variable of unknown
	// values: dropping any label changes what it shows.
	AllLabels bool
	// Refs are the places that read the metric, at most Config.MaxRefsPerMetric.
	Refs []AssetRef
	// RefsOverflow counts the places left out of Refs.
	RefsOverflow int
}

// FileStatus describes one asset and what reading it gave.
type FileStatus struct {
	// Name is the file name; File is as in AssetRef.
	Name string `json:"name"`
	File string `json:"file"`
	// Origin is "dir" or "upload".
	Origin string `json:"origin"`
	// Tenant is the tenant the file applies to, "" for every tenant.
	Tenant      string    `json:"tenant,omitempty"`
	Size        int64     `json:"size"`
	ModTime     time.Time `json:"modTime,omitzero"`
	Expressions int       `json:"expressions"`
	// Errors are what could not be read: the whole file, or expressions one
	// by one. Never fatal: the rest of the file counts.
	Errors []string `json:"errors"`
}

// Config tunes a Book. Zero values take the defaults documented on each field.
type Config struct {
	// Dir is the assets directory; "" reads none.
	Dir string
	// PollInterval is how often Dir is checked for changed files. Default 30s.
	PollInterval time.Duration
	// UploadDir keeps uploaded assets; "" refuses uploads.
	UploadDir string
	// MaxAssetBytes bounds one asset. Default 4 MiB.
	MaxAssetBytes int64
	// MaxAssets bounds the assets per tenant directory, per tenant's uploads,
	// and at the top of Dir. Default 500.
	MaxAssets int
	// MaxRefsPerMetric bounds AssetUse.Refs. Default 20.
	MaxRefsPerMetric int
}

func (c Config) withDefaults() Config {
	if c.PollInterval <= 0 {
		c.PollInterval = 30 * time.Second
	}
	if c.MaxAssetBytes <= 0 {
		c.MaxAssetBytes = 4 << 20
	}
	if c.MaxAssets <= 0 {
		c.MaxAssets = 500
	}
	if c.MaxRefsPerMetric <= 0 {
		c.MaxRefsPerMetric = 20
	}
	return c
}

// Origins of a file.
const (
	originDir    = "dir"
	originUpload = "upload"
)

// scope is who a file applies to.
type scope struct {
	all bool
	t   tenant.ID
}

type fileKey struct {
	scope  scope
	origin string
	name   string
}

// dirErr is a problem of the directory, for the tenants of its scope.
type dirErr struct {
	scope scope
	msg   string
}

// file is one read asset. It is replaced, never modified, once stored.
type file struct {
	key     fileKey
	rel     string // AssetRef.File
	size    int64
	modTime time.Time
	p       *parsed // nil when the file could not be read
	err     string
}

// Book holds every asset and answers what the assets of a tenant read. It is
// safe for concurrent use.
type Book struct {
	cfg    Config
	names  queryaudit.MetricNamer
	logger *slog.Logger

	reloads    *prometheus.CounterVec
	fileErrors prometheus.Gauge

	mu    sync.RWMutex
	files map[fileKey]*file
	// dirErrs are problems with the directory itself (a folder that is no
	// tenant, too many files), shown with the files of the tenants they concern.
	dirErrs []dirErr

	scanMu sync.Mutex // one directory scan at a time
}

// New reads the uploads and the directory once. names resolves selectors
// without a metric name (the cardinality tracker); it may be nil.
func New(cfg Config, names queryaudit.MetricNamer, reg prometheus.Registerer, logger *slog.Logger) (*Book, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f := promauto.With(reg)
	b := &Book{
		cfg:    cfg.withDefaults(),
		names:  names,
		logger: logger,
		reloads: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardguard_assets_reads_total",
			Help: "Asset files read (dashboards, rule files), by result: ok, or error when the whole file could not be read.",
		}, []string{"result"}),
		fileErrors: f.NewGauge(prometheus.GaugeOpts{
			Name: "cardguard_assets_files_with_errors",
			Help: "Asset files with at least one error: unreadable, or an expression no parser reads.",
		}),
		files: map[fileKey]*file{},
	}
	b.reloads.WithLabelValues("ok")
	b.reloads.WithLabelValues("error")
	if b.cfg.UploadDir != "" {
		if err := os.MkdirAll(b.cfg.UploadDir, 0o755); err != nil {
			return nil, fmt.Errorf("assets: cannot create the upload directory: %w", err)
		}
		if err := b.loadUploads(); err != nil {
			return nil, err
		}
	}
	if b.cfg.Dir != "" {
		if st, err := os.Stat(b.cfg.Dir); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("usage.assets_dir %q: not a readable directory: %v", b.cfg.Dir, err)
		}
		b.Scan()
	}
	return b, nil
}

// Run re-reads changed files of the directory every Config.PollInterval until
// ctx is done.
func (b *Book) Run(ctx context.Context) {
	if b.cfg.Dir == "" {
		return
	}
	tick := time.NewTicker(b.cfg.PollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			b.Scan()
		}
	}
}

// namePattern is what an asset may be called: no path, no leading dot.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)

func assetName(name string) bool {
	if !namePattern.MatchString(name) {
		return false
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".json", ".yaml", ".yml":
		return true
	}
	return false
}

// Scan reads the directory, re-reading files whose size or modification time
// changed and forgetting removed ones. Problems are kept for Files, never fatal.
func (b *Book) Scan() {
	b.scanMu.Lock()
	defer b.scanMu.Unlock()
	var errs []dirErr
	seen := map[fileKey]bool{}
	b.mu.RLock()
	old := make(map[fileKey]*file, len(b.files))
	for k, f := range b.files {
		if k.origin == originDir {
			old[k] = f
		}
	}
	b.mu.RUnlock()
	fresh := map[fileKey]*file{}

	readDir := func(dir string, sc scope, prefix string) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			errs = append(errs, dirErr{sc, fmt.Sprintf("cannot read %s: %v", prefix+".", err)})
			return
		}
		n := 0
		for _, e := range entries {
			if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
				continue
			}
			if !assetName(e.Name()) {
				continue // a README, an editor's backup
			}
			if n == b.cfg.MaxAssets {
				errs = append(errs, dirErr{sc, fmt.Sprintf("%s: more than %d assets, the rest left out (usage.max_assets)", cmpOr(prefix, "."), b.cfg.MaxAssets)})
				break
			}
			n++
			k := fileKey{scope: sc, origin: originDir, name: e.Name()}
			seen[k] = true
			info, err := e.Info()
			if err != nil {
				continue
			}
			if f := old[k]; f != nil && f.size == info.Size() && f.modTime.Equal(info.ModTime()) {
				continue
			}
			fresh[k] = b.read(filepath.Join(dir, e.Name()), k, prefix+e.Name(), info)
		}
	}
	readDir(b.cfg.Dir, scope{all: true}, "")
	entries, err := os.ReadDir(b.cfg.Dir)
	if err != nil {
		errs = append(errs, dirErr{scope{all: true}, fmt.Sprintf("cannot read the assets directory: %v", err)})
	}
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		t, err := tenant.Parse(e.Name())
		if err != nil {
			errs = append(errs, dirErr{scope{all: true}, fmt.Sprintf("folder %s/ is no tenant (want accountID:projectID, e.g. 1:0): %v", e.Name(), err)})
			continue
		}
		readDir(filepath.Join(b.cfg.Dir, e.Name()), scope{t: t}, e.Name()+"/")
	}

	b.mu.Lock()
	for k := range old {
		if !seen[k] {
			delete(b.files, k)
		}
	}
	for k, f := range fresh {
		b.files[k] = f
	}
	b.dirErrs = errs
	b.countErrors()
	b.mu.Unlock()
}

// read reads and parses one file of the directory.
func (b *Book) read(path string, k fileKey, rel string, info fs.FileInfo) *file {
	f := &file{key: k, rel: rel, size: info.Size(), modTime: info.ModTime()}
	if info.Size() > b.cfg.MaxAssetBytes {
		f.err = fmt.Sprintf("%d bytes, over the limit of %d (usage.max_asset_bytes)", info.Size(), b.cfg.MaxAssetBytes)
	} else if data, err := readBounded(path, b.cfg.MaxAssetBytes); err != nil {
		f.err = err.Error()
	} else if f.p, err = parseFile(rel, data); err != nil {
		f.err = err.Error()
	}
	if f.err != "" {
		b.reloads.WithLabelValues("error").Inc()
		b.logger.Warn("assets: cannot read an asset", "file", rel, "err", f.err)
	} else {
		b.reloads.WithLabelValues("ok").Inc()
	}
	return f
}

// readBounded reads at most limit bytes of path; a longer file is an error
// (it may have grown since it was listed).
func readBounded(path string, limit int64) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	buf := make([]byte, 0, min(limit+1, 64<<10))
	for int64(len(buf)) <= limit {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, int(min(int64(cap(buf)), limit+1-int64(len(buf)))))
		}
		n, err := fh.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil {
			if errors.Is(err, io.EOF) {
				return buf, nil
			}
			return nil, err
		}
	}
	return nil, fmt.Errorf("larger than the limit of %d bytes (usage.max_asset_bytes)", limit)
}

// countErrors sets the gauge; b.mu is held.
func (b *Book) countErrors() {
	n := 0
	for _, f := range b.files {
		if f.err != "" || (f.p != nil && len(f.p.errs) > 0) {
			n++
		}
	}
	b.fileErrors.Set(float64(n))
}

// filesFor returns the files that apply to t, sorted by File.
func (b *Book) filesFor(t tenant.ID) []*file {
	b.mu.RLock()
	defer b.mu.RUnlock()
	var out []*file
	for k, f := range b.files {
		if k.scope.all || k.scope.t == t {
			out = append(out, f)
		}
	}
	slices.SortFunc(out, func(a, b *file) int { return strings.Compare(a.rel, b.rel) })
	return out
}

// Uses returns, per metric name, what t's assets read. Selectors without a
// metric name are resolved against the names the MetricNamer knows, as the
// query audit resolves live reads, without a cap: a dashboard reading
// {__name__=~".+"} reads every metric. The map is the caller's.
func (b *Book) Uses(t tenant.ID) map[string]AssetUse {
	files := b.filesFor(t)
	libs := map[string]libPanel{}
	for _, f := range files {
		if f.p != nil {
			for uid, lp := range f.p.libs {
				libs[uid] = lp
			}
		}
	}
	var (
		known       []string
		knownLoaded bool
	)
	lc, _ := b.names.(queryaudit.LabelCounter)
	out := map[string]AssetUse{}
	credit := func(ref AssetRef, ex queryaudit.Extraction, values string) {
		for i := range ex.Selectors {
			s := &ex.Selectors[i]
			names := []string{s.Name}
			if s.Name == "" {
				if !knownLoaded && b.names != nil {
					known, knownLoaded = b.names.MetricNames(t), true
				}
				names, _ = queryaudit.ResolveNames(t, s, known, lc, 0)
			}
			for _, n := range names {
				u := out[n]
				if u.Labels == nil {
					u.Labels = map[string]queryaudit.LabelUse{}
				}
				for l, how := range s.Labels {
					u.Labels[l] |= how
				}
				if values != "" && values != "__name__" {
					u.Labels[values] |= queryaudit.UseValues
				}
				u.AllLabels = u.AllLabels || s.AllLabels
				switch {
				case slices.Contains(u.Refs, ref):
				case len(u.Refs) < b.cfg.MaxRefsPerMetric:
					u.Refs = append(u.Refs, ref)
				default:
					u.RefsOverflow++
				}
				out[n] = u
			}
		}
	}
	for _, f := range files {
		if f.p == nil {
			continue
		}
		for _, it := range f.p.items {
			credit(it.ref, it.ex, it.values)
		}
		for _, lr := range f.p.libRefs {
			lp, ok := libs[lr.uid]
			if !ok {
				continue // listed in Files
			}
			for _, it := range lp.items {
				ref := it.ref
				ref.File, ref.Title = f.rel, lr.dashboard
				ref.Panel = lr.panel + " (library panel " + lp.name + ")"
				credit(ref, it.ex, it.values)
			}
		}
	}
	return out
}

// Files describes the assets that apply to t and what reading them gave,
// sorted by File. Problems of the directory itself come first, as a file
// named ".".
func (b *Book) Files(t tenant.ID) []FileStatus {
	files := b.filesFor(t)
	libs := map[string]bool{}
	for _, f := range files {
		if f.p != nil {
			for uid := range f.p.libs {
				libs[uid] = true
			}
		}
	}
	var out []FileStatus
	b.mu.RLock()
	var dirErrs []string
	for _, e := range b.dirErrs {
		if e.scope.all || e.scope.t == t {
			dirErrs = append(dirErrs, e.msg)
		}
	}
	if len(dirErrs) > 0 {
		out = append(out, FileStatus{Name: ".", File: ".", Origin: originDir, Errors: dirErrs})
	}
	b.mu.RUnlock()
	for _, f := range files {
		st := FileStatus{Name: f.key.name, File: f.rel, Origin: f.key.origin, Size: f.size, ModTime: f.modTime, Errors: []string{}}
		if !f.key.scope.all {
			st.Tenant = f.key.scope.t.String()
		}
		if f.err != "" {
			st.Errors = append(st.Errors, f.err)
		}
		if f.p != nil {
			st.Expressions = len(f.p.items)
			st.Errors = append(st.Errors, f.p.errs...)
			for _, lr := range f.p.libRefs {
				if !libs[lr.uid] {
					st.Errors = append(st.Errors, fmt.Sprintf("%s: panel %s: library panel %s (uid %s) is not among the assets: its queries are not counted", lr.dashboard, lr.panel, cmpOr(lr.name, "?"), lr.uid))
				}
			}
		}
		out = append(out, st)
	}
	return out
}

// ---- uploads ----

// Errors of Put and Delete; the API maps them to statuses.
var (
	ErrBadName       = errors.New("bad asset name")
	ErrTooLarge      = errors.New("asset too large")
	ErrTooMany       = errors.New("too many assets")
	ErrNotFound      = errors.New("no such uploaded asset")
	ErrUnreadable    = errors.New("asset cannot be read")
	ErrUploadsClosed = errors.New("uploads are off: no upload directory")
)

func (b *Book) uploadPath(t tenant.ID, name string) string {
	return filepath.Join(b.cfg.UploadDir, t.String(), name)
}

// Put stores an uploaded asset of t, replacing one of the same name. A file
// that cannot be read at all is refused (ErrUnreadable); one with expressions
// that do not parse is kept, its errors listed.
func (b *Book) Put(t tenant.ID, name string, data []byte) (FileStatus, error) {
	if b.cfg.UploadDir == "" {
		return FileStatus{}, ErrUploadsClosed
	}
	if !assetName(name) {
		return FileStatus{}, fmt.Errorf("%w %q: want letters, digits, '.', '_' or '-', at most 128, ending in .json, .yaml or .yml", ErrBadName, clip(name, 64))
	}
	if int64(len(data)) > b.cfg.MaxAssetBytes {
		return FileStatus{}, fmt.Errorf("%w: %d bytes, over the limit of %d (usage.max_asset_bytes)", ErrTooLarge, len(data), b.cfg.MaxAssetBytes)
	}
	rel := "uploaded/" + name
	p, err := parseFile(rel, data)
	if err != nil {
		return FileStatus{}, fmt.Errorf("%w: %v", ErrUnreadable, err)
	}
	k := fileKey{scope: scope{t: t}, origin: originUpload, name: name}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.files[k]; !ok && b.countUploads(t) >= b.cfg.MaxAssets {
		return FileStatus{}, fmt.Errorf("%w: tenant %s has %d uploaded assets, the limit (usage.max_assets)", ErrTooMany, t, b.cfg.MaxAssets)
	}
	path := b.uploadPath(t, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return FileStatus{}, err
	}
	if err := atomicfile.Write(path, data); err != nil {
		return FileStatus{}, err
	}
	f := &file{key: k, rel: rel, size: int64(len(data)), modTime: time.Now(), p: p}
	b.files[k] = f
	b.countErrors()
	st := FileStatus{Name: name, File: rel, Origin: originUpload, Tenant: t.String(), Size: f.size, ModTime: f.modTime, Expressions: len(p.items), Errors: slices.Clone(p.errs)}
	if st.Errors == nil {
		st.Errors = []string{}
	}
	return st, nil
}

// countUploads counts t's uploads; b.mu is held.
func (b *Book) countUploads(t tenant.ID) int {
	n := 0
	for k := range b.files {
		if k.origin == originUpload && !k.scope.all && k.scope.t == t {
			n++
		}
	}
	return n
}

// Delete removes an uploaded asset of t.
func (b *Book) Delete(t tenant.ID, name string) error {
	if !assetName(name) {
		return fmt.Errorf("%w %q", ErrBadName, clip(name, 64))
	}
	k := fileKey{scope: scope{t: t}, origin: originUpload, name: name}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.files[k]; !ok {
		return fmt.Errorf("%w %q for tenant %s (files of the assets directory are removed there)", ErrNotFound, name, t)
	}
	if err := os.Remove(b.uploadPath(t, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	delete(b.files, k)
	b.countErrors()
	return nil
}

// loadUploads reads the uploads kept under UploadDir at start.
func (b *Book) loadUploads() error {
	dirs, err := os.ReadDir(b.cfg.UploadDir)
	if err != nil {
		return fmt.Errorf("assets: cannot read the upload directory: %w", err)
	}
	for _, d := range dirs {
		t, err := tenant.Parse(d.Name())
		if !d.IsDir() || err != nil {
			continue
		}
		entries, err := os.ReadDir(filepath.Join(b.cfg.UploadDir, d.Name()))
		if err != nil {
			b.logger.Warn("assets: cannot read uploads", "tenant", t.String(), "err", err)
			continue
		}
		n := 0
		for _, e := range entries {
			if e.IsDir() || !assetName(e.Name()) || n == b.cfg.MaxAssets {
				continue
			}
			info, err := e.Info()
			if err != nil {
				continue
			}
			n++
			k := fileKey{scope: scope{t: t}, origin: originUpload, name: e.Name()}
			b.files[k] = b.read(filepath.Join(b.cfg.UploadDir, d.Name(), e.Name()), k, "uploaded/"+e.Name(), info)
		}
	}
	b.countErrors()
	return nil
}

// sortedMetrics returns the keys of uses, sorted.
func sortedMetrics(uses map[string]AssetUse) []string {
	out := make([]string, 0, len(uses))
	for n := range uses {
		out = append(out, n)
	}
	slices.SortFunc(out, cmp.Compare[string])
	return out
}

// Problems counts the errors of the assets that apply to t (files that cannot
// be read, expressions no parser reads, library panels not found). While it is
// above 0, a metric none of t's assets names may still be read by one of them.
func (b *Book) Problems(t tenant.ID) int {
	n := 0
	for _, f := range b.Files(t) {
		n += len(f.Errors)
	}
	return n
}
