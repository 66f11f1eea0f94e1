package envx

import (
	"slices"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		err  bool
	}{
		{in: "1500", want: 1500 * time.Millisecond},
		{in: " 250 ", want: 250 * time.Millisecond},
		{in: "1.5s", want: 1500 * time.Millisecond},
		{in: "2m", want: 2 * time.Minute},
		{in: "0", err: true},
		{in: "-5", err: true},
		{in: "-1s", err: true},
		{in: "0s", err: true},
		{in: "soon", err: true},
		{in: "", err: true},
		{in: "99999999999999999", err: true}, // overflows time.Duration
	} {
		got, err := ParseDuration(tc.in)
		if tc.err != (err != nil) || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestSplitList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		ok   bool
	}{
		{"a", []string{"a"}, true},
		{" a , b ", []string{"a", "b"}, true},
		{"", nil, true},
		{"a,,b", []string{"a", "b"}, false},
		{"a, ", []string{"a"}, false},
		{",", nil, false},
	} {
		got, ok := SplitList(tc.in)
		if !slices.Equal(got, tc.want) || ok != tc.ok {
			t.Errorf("SplitList(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
