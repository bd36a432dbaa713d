package pool_test

import (
	"testing"

	"github.com/berth-dev/berth/pool"
)

// TestParseBytes: sizes parse to bytes; anything that is not a size a
// host could have (negative, NaN, infinite, beyond int64) is an error, not
// a wrapped-around limit.
func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"512Mi", 512 << 20, true}, {"1.5Gi", 3 << 29, true}, {"100", 100, true}, {"2G", 2e9, true},
		{"-1Mi", 0, false}, {"NaN", 0, false}, {"+Inf", 0, false}, {"Inf Gi", 0, false},
		{"1e30", 0, false}, {"9000000000Gi", 0, false}, {"", 0, false}, {"Mi", 0, false},
	} {
		got, err := pool.ParseBytes(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d (ok %v)", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
