package image

import "testing"

func TestPullRef(t *testing.T) {
	const d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, c := range []struct{ ref, want string }{
		{"127.0.0.1:5000/e2e/debian:1", "127.0.0.1:5000/e2e/debian@" + d},
		{"ghcr.io/a/b@" + d, "ghcr.io/a/b@" + d},
		{"builtin:python", ""},
		{"", ""},
	} {
		if got := (&Image{Ref: c.ref, Digest: d}).PullRef(); got != c.want {
			t.Errorf("%q: got %q, want %q", c.ref, got, c.want)
		}
	}
}
