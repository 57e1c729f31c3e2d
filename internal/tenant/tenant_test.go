package tenant

import (
	"encoding/json"
	"testing"
)

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    ID
		wantErr bool
	}{
		{in: "0", want: ID{}},
		{in: "42", want: ID{AccountID: 42}},
		{in: "42:7", want: ID{AccountID: 42, ProjectID: 7}},
		{in: "4294967295:4294967295", want: ID{AccountID: 4294967295, ProjectID: 4294967295}},
		{in: "", wantErr: true},
		{in: "4294967296", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "+1", wantErr: true},
		{in: "1:", wantErr: true},
		{in: ":1", wantErr: true},
		{in: "1:2:3", wantErr: true},
		{in: "multitenant", wantErr: true},
		{in: "1%2F2", wantErr: true},
		{in: "..", wantErr: true},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("Parse(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("Parse(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestStringRoundTrip(t *testing.T) {
	t.Parallel()
	id := ID{AccountID: 12, ProjectID: 3}
	if got := id.String(); got != "12:3" {
		t.Fatalf("String() = %q", got)
	}
	b, err := json.Marshal(map[ID]int{id: 1})
	if err != nil {
		t.Fatal(err)
	}
	var back map[ID]int
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back[id] != 1 {
		t.Fatalf("round trip through JSON lost the key: %s", b)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"0", "1:2", "multitenant", "4294967296", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := Parse(s)
		if err != nil {
			return
		}
		back, err := Parse(id.String())
		if err != nil || back != id {
			t.Fatalf("Parse(String(%v)) = %v, %v", id, back, err)
		}
	})
}
