package mcpserver_test

import (
	"bytes"
	"encoding/json"
	"image/png"
	"os/exec"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/berth-dev/berth/mcpserver"
	"github.com/berth-dev/berth/pool"
)

// TestPythonFigure: a matplotlib figure comes back from
// runPythonCodeInRemoteEnvironment as PNG image content beside the text,
// from a real sandbox through a real client.
func TestPythonFigure(t *testing.T) {
	if err := exec.Command("/usr/bin/python3", "-c", "import matplotlib").Run(); err != nil {
		t.Skipf("the host's python3 (which host-rooted pools run) has no matplotlib: run scripts/setup.sh --test (%v)", err)
	}
	e := newEnv(t, mcpserver.Options{})
	key := e.create(t, pool.Config{Name: "figs", Type: pool.TypePython, TimeoutSeconds: 120})
	c := mustConnect(t, e.url("figs"), key, connectOpts{})
	id := c.launch()

	run := func(code string) (*mcp.CallToolResult, mcpserver.PythonOutput, []*mcp.ImageContent) {
		t.Helper()
		r := c.call(mcpserver.ToolRunPython, map[string]any{"environmentId": id, "pythonCode": code})
		if r.IsError {
			t.Fatalf("%q: tool error %s", code, text(r))
		}
		var out mcpserver.PythonOutput
		decode(t, r, &out)
		var images []*mcp.ImageContent
		for _, item := range r.Content {
			if im, ok := item.(*mcp.ImageContent); ok {
				images = append(images, im)
			}
		}
		return r, out, images
	}

	r, out, images := run("import matplotlib.pyplot as plt\nplt.bar(['a', 'b'], [3, 5]); plt.show()")
	var res map[string]any
	_ = json.Unmarshal(out.Result, &res)
	if len(images) != 1 || out.Images != 1 || res["type"] != "image" || res["format"] != "png" || len(res) != 2 {
		t.Fatalf("one figure: %d images, output %+v", len(images), out)
	}
	if _, ok := r.Content[0].(*mcp.TextContent); !ok {
		t.Fatalf("the text does not come first: %T", r.Content[0])
	}
	if strings.Contains(text(r), "base64") || len(text(r)) > 1000 {
		t.Fatalf("the figure is in the text too: %.300s", text(r))
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(images[0].Data))
	if images[0].MIMEType != "image/png" || err != nil || cfg.Width < 200 {
		t.Fatalf("image content %s %dx%d: %v", images[0].MIMEType, cfg.Width, cfg.Height, err)
	}

	// Past the limit: four come back, the rest are named on stderr.
	_, out, images = run("for i in range(5): plt.figure().add_subplot().plot([i, 0])\n21 * 2")
	if len(images) != 4 || out.Images != 4 || string(out.Result) != "42" || !strings.Contains(out.Stderr, "at most 4 figures") {
		t.Fatalf("five figures: %d images, output %+v", len(images), out)
	}
	// No figure: no image content.
	if _, out, images = run("'x' * 3"); len(images) != 0 || out.Images != 0 || string(out.Result) != `"xxx"` {
		t.Fatalf("no figure: %d images, output %+v", len(images), out)
	}
}
