package limits

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/cardguard/cardguard/internal/atomicfile"
	"github.com/cardguard/cardguard/internal/tenant"
)

// OverridesFile is the name of the file FileStore keeps in its directory.
const OverridesFile = "limits_overrides.json"

// FileStore keeps API overrides in one JSON file, {"<tenant>": {<partial limits>}},
// rewritten atomically (temporary file, fsync, rename, fsync of the directory) on every
// change, so a crash leaves the old or the new file, never a torn one. It is safe for
// concurrent use within one process; replicas need a shared store instead.
type FileStore struct {
	path string
	mu   sync.Mutex
}

// NewFileStore returns a store writing dir/limits_overrides.json; dir is created on
// the first Save.
func NewFileStore(dir string) *FileStore {
	return &FileStore{path: filepath.Join(dir, OverridesFile)}
}

// Path returns the file the store writes.
func (f *FileStore) Path() string { return f.path }

// Load implements Store. A missing file is an empty set of overrides.
func (f *FileStore) Load() (map[tenant.ID]json.RawMessage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loadLocked()
}

func (f *FileStore) loadLocked() (map[tenant.ID]json.RawMessage, error) {
	b, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[tenant.ID]json.RawMessage{}, nil
	}
	if err != nil {
		return nil, err
	}
	m := map[tenant.ID]json.RawMessage{}
	if len(bytes.TrimSpace(b)) == 0 {
		return m, nil
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("read %s: %w", f.path, err)
	}
	for t, v := range m {
		var c bytes.Buffer
		if err := json.Compact(&c, v); err == nil {
			m[t] = c.Bytes()
		}
	}
	return m, nil
}

// Save implements Store.
func (f *FileStore) Save(t tenant.ID, override json.RawMessage) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, err := f.loadLocked()
	if err != nil {
		return err
	}
	if override == nil {
		delete(m, t)
	} else {
		m[t] = override
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(f.path, append(b, '\n'))
}
