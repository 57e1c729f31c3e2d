package limits

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/cardguard/cardguard/internal/tenant"
)

func TestDefaultIsValid(t *testing.T) {
	t.Parallel()
	d := Default()
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	if d.MaxLabelsPerSeries != 40 || d.MaxLabelNameLength != 256 || d.MaxLabelValueLength != 4096 ||
		d.MaxRequestBytes != 32<<20 || d.Mode != ModeEnforce || d.OnLimit != OnLimitDrop || d.MaxSeries != 0 {
		t.Fatalf("unexpected defaults %+v", d)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		edit  func(l *Limits)
		field string // "" = valid
	}{
		{"defaults", func(*Limits) {}, ""},
		{"negative max_series", func(l *Limits) { l.MaxSeries = -1 }, "max_series"},
		{"negative per metric", func(l *Limits) { l.MaxSeriesPerMetric = -5 }, "max_series_per_metric"},
		{"negative rate", func(l *Limits) { l.IngestionRate = -1 }, "ingestion_rate"},
		{"negative burst", func(l *Limits) { l.IngestionBurst = -1 }, "ingestion_burst"},
		{"negative labels", func(l *Limits) { l.MaxLabelsPerSeries = -1 }, "max_labels_per_series"},
		{"negative name len", func(l *Limits) { l.MaxLabelNameLength = -1 }, "max_label_name_length"},
		{"negative value len", func(l *Limits) { l.MaxLabelValueLength = -1 }, "max_label_value_length"},
		{"negative request bytes", func(l *Limits) { l.MaxRequestBytes = -1 }, "max_request_bytes"},
		{"bad mode", func(l *Limits) { l.Mode = "observe" }, "mode"},
		{"empty mode", func(l *Limits) { l.Mode = "" }, "mode"},
		{"dry run", func(l *Limits) { l.Mode = ModeDryRun }, ""},
		{"bad on_limit", func(l *Limits) { l.OnLimit = "ignore" }, "on_limit"},
		{"reject", func(l *Limits) { l.OnLimit = OnLimitReject }, ""},
		{"bad guard action", func(l *Limits) { l.LabelGuard.Action = "hash" }, "label_guard.action"},
		{"drop_label", func(l *Limits) { l.LabelGuard.Action = GuardDropLabel }, ""},
		{"empty overflow value", func(l *Limits) { l.LabelGuard.OverflowValue = "" }, "label_guard.overflow_value"},
		{"empty overflow value, drop_series", func(l *Limits) {
			l.LabelGuard.OverflowValue, l.LabelGuard.Action = "", GuardDropSeries
		}, ""},
		{"overflow value too long", func(l *Limits) {
			l.MaxLabelValueLength = 3
		}, "label_guard.overflow_value"},
		{"overflow value not UTF-8", func(l *Limits) { l.LabelGuard.OverflowValue = "\xff" }, "label_guard.overflow_value"},
		{"overflow value not UTF-8, drop_label", func(l *Limits) {
			l.LabelGuard.OverflowValue, l.LabelGuard.Action = "a\xff", GuardDropLabel
		}, "label_guard.overflow_value"},
		{"negative guard", func(l *Limits) { l.LabelGuard.MaxValuesPerLabel = -1 }, "label_guard.max_values_per_label"},
		{"empty exempt label", func(l *Limits) { l.LabelGuard.ExemptLabels = []string{"a", ""} }, "label_guard.exempt_labels[1]"},
		{"empty exempt metric", func(l *Limits) { l.LabelGuard.ExemptMetrics = []string{""} }, "label_guard.exempt_metrics[0]"},
	}
	for _, tt := range tests {
		l := Default()
		tt.edit(&l)
		err := l.Validate()
		if tt.field == "" {
			if err != nil {
				t.Errorf("%s: unexpected error %v", tt.name, err)
			}
			continue
		}
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tt.field || fe.Reason == "" {
			t.Errorf("%s: got %v, want a FieldError for %s", tt.name, err, tt.field)
		}
	}
}

func TestDecodeYAMLStrictAndPartial(t *testing.T) {
	t.Parallel()
	base := Default()
	base.LabelGuard.ExemptLabels = []string{"job"}
	got, err := DecodeYAML(base, []byte("max_series: 1000\nlabel_guard:\n  max_values_per_label: 50\n  exempt_labels: [instance, pod]\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.MaxSeries = 1000
	want.LabelGuard.MaxValuesPerLabel = 50
	want.LabelGuard.ExemptLabels = []string{"instance", "pod"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if !reflect.DeepEqual(base.LabelGuard.ExemptLabels, []string{"job"}) {
		t.Fatalf("base changed: %v", base.LabelGuard.ExemptLabels)
	}

	for _, doc := range []string{
		"max_seriess: 1",
		"label_guard:\n  action_: drop_label",
		"max_series: lots",
	} {
		if _, err := DecodeYAML(base, []byte(doc)); err == nil {
			t.Errorf("%q: want an error", doc)
		}
	}
	if _, err := DecodeYAML(base, []byte("mode: observe")); err == nil || !strings.Contains(err.Error(), "mode") {
		t.Errorf("invalid mode: got %v", err)
	}
	if got, err := DecodeYAML(base, nil); err != nil || !reflect.DeepEqual(got, base) {
		t.Errorf("empty document: got %+v, %v", got, err)
	}
}

func TestDecodeJSON(t *testing.T) {
	t.Parallel()
	base := Default()
	base.LabelGuard.ExemptMetrics = []string{"up"}
	tests := []struct {
		name, body string
		field      string // expected FieldError field; "-" = no error
		check      func(l Limits) bool
	}{
		{"partial", `{"max_series": 10, "label_guard": {"action": "drop_series"}}`, "-", func(l Limits) bool {
			return l.MaxSeries == 10 && l.LabelGuard.Action == GuardDropSeries && l.LabelGuard.OverflowValue == "__cardguard_overflow__" && l.MaxLabelsPerSeries == 40
		}},
		{"slices replace", `{"label_guard": {"exempt_metrics": ["a","b"]}}`, "-", func(l Limits) bool {
			return reflect.DeepEqual(l.LabelGuard.ExemptMetrics, []string{"a", "b"})
		}},
		{"unknown", `{"max_seriez": 1}`, "max_seriez", nil},
		{"unknown nested", `{"label_guard": {"foo": 1}}`, "foo", nil},
		{"type", `{"max_series": "many"}`, "max_series", nil},
		{"fraction for int", `{"max_series": 1.5}`, "max_series", nil},
		{"invalid value", `{"on_limit": "explode"}`, "on_limit", nil},
		{"array", `[1]`, "", nil},
		{"trailing", `{"max_series": 1} {}`, "", nil},
		{"garbage", `{"max_series": `, "", nil},
	}
	for _, tt := range tests {
		got, err := DecodeJSON(base, []byte(tt.body))
		if tt.field == "-" {
			if err != nil || !tt.check(got) {
				t.Errorf("%s: got %+v, %v", tt.name, got, err)
			}
			continue
		}
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tt.field {
			t.Errorf("%s: got %v (%#v), want FieldError on %q", tt.name, err, fe, tt.field)
		}
	}
	if !reflect.DeepEqual(base.LabelGuard.ExemptMetrics, []string{"up"}) {
		t.Fatalf("base changed: %v", base.LabelGuard.ExemptMetrics)
	}
}

func TestConfigYAML(t *testing.T) {
	t.Parallel()
	doc := `
limits:
  defaults:
    max_series: 100
    mode: dry_run
  overrides:
    "1":
      max_series: 1000
    "2:3":
      on_limit: reject
      label_guard:
        max_values_per_label: 10
`
	var cfg struct {
		Limits Config `yaml:"limits"`
	}
	if err := yaml.Unmarshal([]byte(doc), &cfg); err != nil { // not strict: Config is anyway
		t.Fatal(err)
	}
	c := cfg.Limits
	if c.Defaults.MaxSeries != 100 || c.Defaults.Mode != ModeDryRun || c.Defaults.MaxLabelsPerSeries != 40 {
		t.Fatalf("defaults %+v", c.Defaults)
	}
	o1 := c.Overrides[tenant.MustParse("1:0")]
	if o1.MaxSeries != 1000 || o1.Mode != ModeDryRun {
		t.Fatalf("override 1: %+v", o1)
	}
	o2 := c.Overrides[tenant.MustParse("2:3")]
	if o2.MaxSeries != 100 || o2.OnLimit != OnLimitReject || o2.LabelGuard.MaxValuesPerLabel != 10 || o2.LabelGuard.Action != GuardAggregate {
		t.Fatalf("override 2:3: %+v", o2)
	}

	bad := []struct{ name, doc, want string }{
		{"unknown top", "limits:\n  default:\n    max_series: 1\n", "default"},
		{"unknown in defaults", "limits:\n  defaults:\n    max_serie: 1\n", "max_serie"},
		{"unknown in override", "limits:\n  overrides:\n    \"1\":\n      max_serie: 1\n", "max_serie"},
		{"bad tenant", "limits:\n  overrides:\n    \"x\":\n      max_series: 1\n", "tenant"},
		{"invalid override", "limits:\n  overrides:\n    \"1\":\n      max_series: -1\n", "limits.overrides[1:0].max_series"},
		{"invalid default", "limits:\n  defaults:\n    mode: loud\n", "limits.defaults.mode"},
	}
	for _, tt := range bad {
		var cfg struct {
			Limits Config `yaml:"limits"`
		}
		err := yaml.Unmarshal([]byte(tt.doc), &cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error mentioning %q", tt.name, err, tt.want)
		}
	}
}

func TestReasonMessages(t *testing.T) {
	t.Parallel()
	l := Default()
	l.MaxSeries = 1000
	if got := ReasonMaxSeries.Message(&l); got != "per-tenant series limit of 1000 reached (max_series); raise it with the limits API" {
		t.Fatalf("message %q", got)
	}
	seen := map[Reason]bool{}
	for i, r := range Reasons() {
		if reasonIndex(r) != i || seen[r] {
			t.Fatalf("reason %q index %d", r, reasonIndex(r))
		}
		seen[r] = true
		if r.Message(&l) == "" {
			t.Fatalf("no message for %q", r)
		}
	}
	if len(seen) != numReasons || reasonIndex("nope") != -1 {
		t.Fatalf("numReasons %d, have %d", numReasons, len(seen))
	}
}

func FuzzDecodeJSON(f *testing.F) {
	f.Add([]byte(`{"max_series": 10, "label_guard": {"action": "drop_series"}}`))
	f.Add([]byte(`{"ingestion_rate": 1e300}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := DecodeJSON(Default(), b)
		if err == nil {
			if verr := l.Validate(); verr != nil {
				t.Fatalf("decoded limits do not validate: %v", verr)
			}
		}
		if _, err := mergePatch(nil, b); err == nil {
			_, _ = DecodeJSON(Default(), b)
		}
	})
}

func FuzzDecodeYAML(f *testing.F) {
	f.Add([]byte("max_series: 1\nlabel_guard:\n  exempt_labels: [a]\n"))
	f.Add([]byte("defaults: {}\noverrides: {\"1\": {}}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if l, err := DecodeYAML(Default(), b); err == nil {
			if verr := l.Validate(); verr != nil {
				t.Fatalf("decoded limits do not validate: %v", verr)
			}
		}
		var c Config
		_ = yaml.Unmarshal(b, &c)
	})
}
