// Package tenant defines the VictoriaMetrics tenant identifier that every part of
// cardguard keys its state by.
//
// A tenant is written accountID[:projectID], both unsigned 32-bit integers, exactly as
// in VictoriaMetrics cluster URLs (/insert/<accountID>:<projectID>/...). A missing
// projectID means 0.
package tenant

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ID identifies a tenant. The zero value is tenant 0:0, the default tenant of
// VictoriaMetrics. ID is comparable and cheap to use as a map key.
type ID struct {
	AccountID uint32
	ProjectID uint32
}

// Parse reads "accountID" or "accountID:projectID". Anything else, including
// VictoriaMetrics' "multitenant" read path, is an error: cardguard always acts for
// exactly one tenant.
func Parse(s string) (ID, error) {
	if s == "" {
		return ID{}, errors.New("empty tenant")
	}
	acct, proj, hasProj := strings.Cut(s, ":")
	a, err := parseUint32(acct)
	if err != nil {
		return ID{}, fmt.Errorf("invalid accountID in tenant %q: %w", truncate(s), err)
	}
	var p uint32
	if hasProj {
		if p, err = parseUint32(proj); err != nil {
			return ID{}, fmt.Errorf("invalid projectID in tenant %q: %w", truncate(s), err)
		}
	}
	return ID{AccountID: a, ProjectID: p}, nil
}

// MustParse is Parse for constants in tests and defaults; it panics on error.
func MustParse(s string) ID {
	id, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return id
}

func parseUint32(s string) (uint32, error) {
	// strconv accepts a leading '+'; VictoriaMetrics does not, and neither do we.
	if s == "" || s[0] < '0' || s[0] > '9' {
		return 0, errors.New("want a decimal number")
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, errors.New("want a decimal number below 2^32")
	}
	return uint32(n), nil
}

// String returns the canonical "accountID:projectID" form.
func (id ID) String() string {
	var b [21]byte
	return string(id.AppendString(b[:0]))
}

// AppendString appends the canonical form to dst without allocating.
func (id ID) AppendString(dst []byte) []byte {
	dst = strconv.AppendUint(dst, uint64(id.AccountID), 10)
	dst = append(dst, ':')
	return strconv.AppendUint(dst, uint64(id.ProjectID), 10)
}

// MarshalText implements encoding.TextMarshaler so IDs work as JSON and YAML map keys.
func (id ID) MarshalText() ([]byte, error) { return id.AppendString(nil), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
