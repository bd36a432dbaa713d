package dataplane_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"testing"
	"time"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/dataplane"
	"github.com/berth-dev/berth/internal/testutil"
	"github.com/berth-dev/berth/pool"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/bwrap"
	"github.com/berth-dev/berth/store"
)

var onePNG = []byte("\x89PNG\r\n\x1a\nrest")

// TestResultImages: how an execution's figures map onto Azure's result.
func TestResultImages(t *testing.T) {
	img := func(format string, data []byte) agent.Image { return agent.Image{Format: format, Data: data} }
	tests := []struct {
		name       string
		value      string
		images     []agent.Image
		wantResult string
		wantMore   int
	}{
		{"no figure", "42", nil, `42`, 0},
		{"no figure, no value", "", nil, `null`, 0},
		{"a figure is the result", "", []agent.Image{img("png", onePNG)}, `{"type":"image","format":"png","base64_data":"` + base64.StdEncoding.EncodeToString(onePNG) + `"}`, 0},
		{"a null value gives way", "null", []agent.Image{img("png", onePNG)}, `{"type":"image","format":"png","base64_data":"` + base64.StdEncoding.EncodeToString(onePNG) + `"}`, 0},
		{"a value stays the result", `"hi"`, []agent.Image{img("png", onePNG)}, `"hi"`, 1},
		{"further figures", "", []agent.Image{img("png", onePNG), img("png", onePNG), img("png", onePNG)}, "", 2},
		{"not PNG is dropped", "", []agent.Image{img("png", []byte("<svg/>")), img("svg", onePNG)}, `null`, 0},
		{"past the count limit", "", []agent.Image{img("png", onePNG), img("png", onePNG), img("png", onePNG), img("png", onePNG), img("png", onePNG)}, "", agent.MaxImages - 1},
		{"past the size limit", "", []agent.Image{img("png", append(bytes.Clone(onePNG), make([]byte, agent.MaxImageBytes)...)), img("png", onePNG)}, `null`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := &pool.Execution{}
			x.Value, x.Images, x.Status = json.RawMessage(tt.value), tt.images, agent.StatusSuccess
			r := dataplane.Result(agent.Python, x)
			if tt.wantResult != "" && string(r.Result) != tt.wantResult {
				t.Errorf("result %s, want %s", r.Result, tt.wantResult)
			}
			if len(r.Images) != tt.wantMore {
				t.Errorf("%d further images, want %d", len(r.Images), tt.wantMore)
			}
		})
	}
}

// TestExecuteFigure: a Python pool on a real sandbox returns a matplotlib
// figure as Azure does, over the REST data plane.
func TestExecuteFigure(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "bwrap")
	if err := exec.Command("/usr/bin/python3", "-c", "import matplotlib").Run(); err != nil {
		t.Skipf("the host's python3 (which host-rooted pools run) has no matplotlib: run scripts/setup.sh --test (%v)", err)
	}
	url := poolServer(t)
	exec := func(code string) dataplane.ExecuteResult {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"properties": map[string]any{
			"codeInputType": "inline", "executionType": "synchronous", "code": code}})
		resp, err := http.Post(url+"/pools/py/code/execute?identifier=figs", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			Properties dataplane.ExecuteResult `json:"properties"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
			t.Fatalf("execute: %d %v", resp.StatusCode, err)
		}
		return out.Properties
	}

	r := exec("import matplotlib.pyplot as plt\nplt.plot([1, 4, 9, 16]); plt.title('squares'); plt.show()")
	var res struct {
		Type, Format string
		Base64Data   []byte `json:"base64_data"`
	}
	if err := json.Unmarshal(r.Result, &res); err != nil || res.Type != "image" || res.Format != "png" {
		t.Fatalf("result %.200s (%v), stderr %q", r.Result, err, r.Stderr)
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(res.Base64Data))
	if err != nil || cfg.Width < 200 || cfg.Height < 200 {
		t.Fatalf("base64_data is not a figure: %dx%d %v", cfg.Width, cfg.Height, err)
	}
	if len(r.Images) != 0 || r.Status != agent.StatusSuccess {
		t.Fatalf("one figure: %d further images, status %s", len(r.Images), r.Status)
	}
	// Two figures and a value: the value is the result, both figures follow.
	r = exec("plt.figure(); plt.plot([1]); plt.figure(); plt.plot([2]); plt.show()\n'done'")
	if string(r.Result) != `"done"` || len(r.Images) != 2 || r.Images[1].Type != "image" {
		t.Fatalf("two figures and a value: result %.100s, %d images", r.Result, len(r.Images))
	}
	// No figure: the result is the value, as before.
	if r = exec("6 * 7"); string(r.Result) != "42" || len(r.Images) != 0 {
		t.Fatalf("no figure: %s %d", r.Result, len(r.Images))
	}
}

// poolServer serves the data plane of a Python pool "py" on bwrap (no
// edge in front: the key check is not what this tests).
func poolServer(t *testing.T) string {
	bo := bwrap.Options{}
	bo.Instance = "envimg" + fmt.Sprint(time.Now().UnixNano()%1e6)
	bo.StateDir = t.TempDir()
	bo.AgentPath = testutil.AgentBinary(t)
	rt, err := bwrap.New(bo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Cleanup(context.Background()) })
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	mgr := pool.NewManager(pool.Options{Store: st, Runtimes: map[string]sandbox.Runtime{"bwrap": rt}})
	t.Cleanup(mgr.Close)
	if _, _, err := mgr.Create(context.Background(), pool.Config{Name: "py", Type: pool.TypePython, Ready: 1, TimeoutSeconds: 120}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(dataplane.Handler(dataplane.Options{Pools: mgr}))
	t.Cleanup(srv.Close)
	return srv.URL
}
