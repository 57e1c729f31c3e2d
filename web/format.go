package web

import (
	"html/template"
	"math"
	"strconv"
	"strings"
	"time"
)

func (u *UI) funcs() template.FuncMap {
	return template.FuncMap{
		"int":     func(n any) string { return fmtInt(toInt64(n)) },
		"compact": func(n any) string { return fmtCompact(toFloat(n)) },
		"num":     fmtNum,
		"pct":     func(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) },
		"ago":     func(t time.Time) string { return fmtAgo(u.o.Now(), t) },
		"utc": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format("2006-01-02 15:04:05 UTC")
		},
		"join": strings.Join,
		"share": func(f float64) string {
			if f > 0 && f < 0.01 {
				return "<1%"
			}
			return strconv.FormatFloat(f*100, 'f', 0, 64) + "%"
		},
		"churn": func(f float64) string {
			if f <= 0 {
				return "–"
			}
			return strconv.FormatFloat(f, 'f', 1, 64) + "×"
		},
	}
}

func toInt64(n any) int64 {
	switch v := n.(type) {
	case int:
		return int64(v)
	case int64:
		return v
	case uint64:
		return int64(min(v, math.MaxInt64))
	case float64:
		return int64(v)
	}
	return 0
}

func toFloat(n any) float64 {
	switch v := n.(type) {
	case int:
		return float64(v)
	case int64:
		return float64(v)
	case uint64:
		return float64(v)
	case float64:
		return v
	}
	return 0
}

// fmtInt writes n with thin-space-free comma grouping: 1,234,567.
func fmtInt(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// fmtCompact writes 950, 12.3k, 4.5M, 1.2G.
func fmtCompact(f float64) string {
	a := math.Abs(f)
	switch {
	case a >= 1e9:
		return trimZero(strconv.FormatFloat(f/1e9, 'f', 1, 64)) + "G"
	case a >= 1e6:
		return trimZero(strconv.FormatFloat(f/1e6, 'f', 1, 64)) + "M"
	case a >= 1e4:
		return strconv.FormatFloat(f/1e3, 'f', 0, 64) + "k"
	case a >= 1e3:
		return trimZero(strconv.FormatFloat(f/1e3, 'f', 1, 64)) + "k"
	case a >= 10 || f == math.Trunc(f):
		return strconv.FormatFloat(f, 'f', 0, 64)
	}
	return strconv.FormatFloat(f, 'f', 1, 64)
}

func trimZero(s string) string { return strings.TrimSuffix(s, ".0") }

// fmtNum writes a limit value as typed in the API: integers without a fraction.
func fmtNum(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func fmtAgo(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return strconv.Itoa(int(d/time.Second)) + " s ago"
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + " min ago"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + " h ago"
	}
	return strconv.Itoa(int(d/(24*time.Hour))) + " days ago"
}

func fmtDuration(d time.Duration) string {
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		return strconv.Itoa(int(d/time.Hour)) + " h"
	case d >= time.Minute:
		return strconv.Itoa(int(d/time.Minute)) + " min"
	}
	return strconv.Itoa(int(d/time.Second)) + " s"
}
