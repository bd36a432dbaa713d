package kube

import (
	"strings"
	"testing"

	"github.com/berth-dev/berth/sandbox"
)

func TestCheckVolumes(t *testing.T) {
	vol := func(group string, vs ...sandbox.Volume) sandbox.Spec { return sandbox.Spec{Group: group, Volumes: vs} }
	for _, c := range []struct {
		spec sandbox.Spec
		err  string // "" if fine
	}{
		{vol(""), ""},
		{vol("app/a", sandbox.Volume{Name: "data", Path: "/data"}, sandbox.Volume{Name: "c", Path: "/var/cache/x"}), ""},
		{vol("", sandbox.Volume{Name: "data", Path: "/data"}), "need a group"},
		{vol("App/A", sandbox.Volume{Name: "data", Path: "/data"}), "need a group"},
		{vol("app/a", sandbox.Volume{Name: "Data", Path: "/data"}), "want [a-z0-9-]"},
		{vol("app/a", sandbox.Volume{Name: "data", Path: "data"}), "not a clean absolute path"},
		{vol("app/a", sandbox.Volume{Name: "data", Path: "/a/../b"}), "not a clean absolute path"},
		{vol("app/a", sandbox.Volume{Name: "data", Path: "/"}), "not a clean absolute path"},
		{vol("app/a", sandbox.Volume{Name: "data", Path: "/.berth/token"}), "sandbox's own"},
		{vol("app/a", sandbox.Volume{Name: "data", Path: "/mnt/data"}), "sandbox's own"},
		{vol("app/a", sandbox.Volume{Name: "data", Path: "/a"}, sandbox.Volume{Name: "data", Path: "/b"}), "named twice"},
	} {
		err := checkVolumes(c.spec)
		if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%+v: got %v, want %q", c.spec, err, c.err)
		}
	}
}
