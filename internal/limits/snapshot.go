package limits

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/cardguard/cardguard/internal/tenant"
)

// The membership snapshot lets a restarted cardguard keep admitting the series it
// admitted before, so that existing series keep flowing across a restart even when
// a tenant is at its limit (without it, whatever series arrived first after the
// restart would take the places).
//
// Format: the magic "cgmem1\n", then one record per series: tenant account and
// project (uint32 each), generation (int64), series hash (uint64), all little
// endian, and a metric reference (uvarint): 0 for the metric overflow, i for the
// i-th metric name of the file; a reference one past the names seen so far is
// followed by that new name (uvarint length, bytes).
const membershipMagic = "cgmem1\n"

// maxSnapshotName bounds a metric name read from a snapshot.
const maxSnapshotName = 64 << 10

// WriteMembership writes every active series of every tenant to w.
func (e *Enforcer) WriteMembership(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	if _, err := bw.WriteString(membershipMagic); err != nil {
		return err
	}
	names := make(map[string]uint64)
	var rec [8 + 8 + 8 + binary.MaxVarintLen64]byte
	var werr error
	e.EachSeries(func(a Admission) {
		if werr != nil {
			return
		}
		binary.LittleEndian.PutUint32(rec[0:], a.Tenant.AccountID)
		binary.LittleEndian.PutUint32(rec[4:], a.Tenant.ProjectID)
		binary.LittleEndian.PutUint64(rec[8:], uint64(a.Gen))
		binary.LittleEndian.PutUint64(rec[16:], a.Hash)
		n := 24
		ref, known := uint64(0), true
		if a.Metric != "" {
			if ref, known = names[a.Metric]; !known {
				ref = uint64(len(names) + 1)
				names[a.Metric] = ref
			}
		}
		n += binary.PutUvarint(rec[n:], ref)
		if _, werr = bw.Write(rec[:n]); werr != nil {
			return
		}
		if !known {
			var l [binary.MaxVarintLen64]byte
			if _, werr = bw.Write(l[:binary.PutUvarint(l[:], uint64(len(a.Metric)))]); werr != nil {
				return
			}
			_, werr = bw.WriteString(a.Metric)
		}
	})
	if werr != nil {
		return werr
	}
	return bw.Flush()
}

// ReadMembership adds the series in r to the membership, as if admitted in the
// generations recorded (older ones are ignored). It returns how many it read.
func (e *Enforcer) ReadMembership(r io.Reader) (int, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	magic := make([]byte, len(membershipMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != membershipMagic {
		return 0, errors.New("not a cardguard membership snapshot")
	}
	var names []string
	var rec [24]byte
	count := 0
	for {
		if _, err := io.ReadFull(br, rec[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return count, nil
			}
			return count, fmt.Errorf("truncated membership snapshot after %d series: %w", count, err)
		}
		ref, err := binary.ReadUvarint(br)
		if err != nil {
			return count, fmt.Errorf("truncated membership snapshot after %d series: %w", count, err)
		}
		metric := ""
		switch {
		case ref == 0:
		case ref <= uint64(len(names)):
			metric = names[ref-1]
		case ref == uint64(len(names))+1:
			l, err := binary.ReadUvarint(br)
			if err != nil || l > maxSnapshotName {
				return count, fmt.Errorf("bad metric name length in membership snapshot after %d series", count)
			}
			b := make([]byte, l)
			if _, err := io.ReadFull(br, b); err != nil {
				return count, fmt.Errorf("truncated membership snapshot after %d series: %w", count, err)
			}
			metric = string(b)
			names = append(names, metric)
		default:
			return count, fmt.Errorf("bad metric reference %d in membership snapshot after %d series", ref, count)
		}
		t := tenant.ID{AccountID: binary.LittleEndian.Uint32(rec[0:]), ProjectID: binary.LittleEndian.Uint32(rec[4:])}
		e.AddRemoteSeries(t, int64(binary.LittleEndian.Uint64(rec[8:])), metric, binary.LittleEndian.Uint64(rec[16:]))
		count++
	}
}

// SaveMembership writes the membership to path atomically (temporary file, fsync,
// rename), so that a crash leaves either the old snapshot or the new one.
func (e *Enforcer) SaveMembership(path string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := e.WriteMembership(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// LoadMembership reads a snapshot written by SaveMembership. A missing file is
// reported as an error wrapping fs.ErrNotExist.
func (e *Enforcer) LoadMembership(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return e.ReadMembership(f)
}
