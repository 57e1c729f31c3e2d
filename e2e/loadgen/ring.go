package main

import (
	"bytes"
	"encoding/gob"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/cespare/xxhash/v2"

	"github.com/cardguard/cardguard/e2e/workload"
)

// loadRing returns the ring of w: from dir when an earlier run left it there,
// else built and, when dir is not empty, saved there for the next run. A
// benchmark runs the generator a dozen times on the same workload, and the OTLP
// ring takes seconds to build. cached says whether it came from dir.
func loadRing(w workload.Workload, dir string) (rg *workload.Ring, cached bool, err error) {
	if dir == "" {
		rg, err = workload.Build(w)
		return rg, false, err
	}
	path := filepath.Join(dir, "ring-"+strconv.FormatUint(xxhash.Sum64String(fmt.Sprintf("%#v", w)), 16)+".gob")
	if b, err := os.ReadFile(path); err == nil {
		var r workload.Ring
		if gob.NewDecoder(bytes.NewReader(b)).Decode(&r) == nil && workload.Digest(r.Payloads) == r.Digest && len(r.Payloads) == len(r.Samples) && len(r.Payloads) > 0 {
			return &r, true, nil
		}
		// Unreadable or not what it says it is: build it again.
	}
	if rg, err = workload.Build(w); err != nil {
		return nil, false, err
	}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(rg); err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, false, err
	}
	// Written whole, then renamed: a generator reading at the same time sees
	// the old file or the new one, never half of one.
	tmp, err := os.CreateTemp(dir, "ring-*.tmp")
	if err != nil {
		return nil, false, err
	}
	_, err = tmp.Write(buf.Bytes())
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return nil, false, err
	}
	return rg, false, nil
}
