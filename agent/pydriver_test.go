package agent

import (
	"bytes"
	"context"
	"image/png"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// hostPython is the interpreter the executor runs; the figure tests need
// matplotlib in it (scripts/setup.sh --test installs python3-matplotlib).
const hostPython = "/usr/bin/python3"

func requireMatplotlib(t *testing.T) {
	t.Helper()
	if err := exec.Command(hostPython, "-c", "import matplotlib").Run(); err != nil {
		t.Skipf("%s has no matplotlib (%v): run scripts/setup.sh --test, which installs python3-matplotlib", hostPython, err)
	}
}

// pyExecutor runs the real driver on the host's python3 (unsandboxed: a
// unit test of the driver; the pool tests run it in sandboxes).
func pyExecutor(t *testing.T) *executor {
	t.Helper()
	x := newExecutor(newProcs(), t.TempDir(), t.TempDir(), 0)
	x.env = append(x.env, "MPLCONFIGDIR="+t.TempDir())
	t.Cleanup(x.close)
	return x
}

func (x *executor) py(t *testing.T, code string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stderr strings.Builder
	r := x.run(ctx, ExecRequest{Language: Python, Code: code, TimeoutMillis: 120_000}, func(e Event) { stderr.WriteString(e.Stderr) })
	if r.Status == StatusTimeout {
		t.Fatalf("%q timed out", code)
	}
	r.Error += stderr.String() // the tests below look for the driver's notes
	return r
}

func TestPythonFigures(t *testing.T) {
	requireMatplotlib(t)
	x := pyExecutor(t)

	// No matplotlib cost for code that does not use it.
	if r := x.py(t, "import sys\n'matplotlib' in sys.modules"); string(r.Value) != "false" || len(r.Images) != 0 {
		t.Fatalf("matplotlib was imported by the driver itself: %+v", r)
	}
	tests := []struct {
		name, code string
		images     int
		value      string
		note       string // expected on stderr
	}{
		{"show", "import matplotlib.pyplot as plt\nplt.plot([1, 4, 9]); plt.show()", 1, "", ""},
		{"show from an alias", "from matplotlib.pyplot import show, figure\nfigure().add_subplot().bar([1, 2], [3, 4])\nshow()", 1, "", ""},
		{"nothing drawn", "1 + 1", 0, "2", ""},
		{"left open, with a value", "plt.figure(); plt.plot([3, 2]); 7", 1, "7", ""},
		{"closed ones are not returned", "f = plt.figure(); plt.close(f)", 0, "", ""},
		{"two shows", "plt.plot([1]); plt.show(); plt.plot([2]); plt.show()", 2, "", ""},
		{"past the limit", "for i in range(6): plt.figure().add_subplot().plot([i])\nplt.show()", MaxImages, "", "at most 4 figures per execution"},
		{"an error still returns the figure", "plt.plot([1]); 1/0", 1, "", "ZeroDivisionError"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := x.py(t, tt.code)
			if len(r.Images) != tt.images {
				t.Fatalf("%d images, want %d (%+v)", len(r.Images), tt.images, r.Error)
			}
			if tt.value != "" && string(r.Value) != tt.value {
				t.Errorf("value %s, want %s", r.Value, tt.value)
			}
			if !strings.Contains(r.Error, tt.note) {
				t.Errorf("stderr/error %q lacks %q", r.Error, tt.note)
			}
			for _, im := range r.Images {
				cfg, err := png.DecodeConfig(bytes.NewReader(im.Data))
				if im.Format != "png" || err != nil || cfg.Width < 100 || cfg.Height < 100 {
					t.Errorf("image %s %dx%d: %v", im.Format, cfg.Width, cfg.Height, err)
				}
			}
		})
	}
	// Every figure was closed after it was returned.
	if r := x.py(t, "len(plt.get_fignums())"); string(r.Value) != "0" {
		t.Fatalf("open figures after the executions: %s", r.Value)
	}

	// A figure past the size limit is dropped with a note; the smaller
	// one after it still comes back.
	small := pyExecutor(t)
	small.env = append(small.env, "BERTH_MAX_FIGURE_BYTES=20000")
	r := small.py(t, "import numpy, matplotlib.pyplot as plt\n"+
		"plt.imshow(numpy.random.default_rng(1).random((300, 300))); plt.show()\nplt.plot([1, 2]); plt.show()")
	if len(r.Images) != 1 || !strings.Contains(r.Error, "past the limit of 20000 bytes") {
		t.Fatalf("size limit: %d images, stderr %q", len(r.Images), r.Error)
	}
}
