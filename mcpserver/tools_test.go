package mcpserver_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/berth-dev/berth/mcpserver"
	"github.com/berth-dev/berth/pool"
)

var allTools = []string{
	mcpserver.ToolClose, mcpserver.ToolDownloadFile, mcpserver.ToolLaunchShell, mcpserver.ToolListFiles,
	mcpserver.ToolRunPython, mcpserver.ToolRunShell, mcpserver.ToolUploadFile,
}

// TestTools exercises every tool on both pool types.
func TestTools(t *testing.T) {
	e := newEnv(t, mcpserver.Options{})
	for _, typ := range []string{pool.TypeShell, pool.TypePython} {
		t.Run(typ, func(t *testing.T) {
			key := e.create(t, pool.Config{Name: typ, Type: typ, TimeoutSeconds: 30})
			c := mustConnect(t, e.url(typ), key, connectOpts{version: "2025-11-25"})

			init := c.InitializeResult()
			if init.ServerInfo.Name != "berth" || init.ServerInfo.Version != "test" || init.Capabilities.Tools == nil {
				t.Fatalf("initialize: %+v %+v", init.ServerInfo, init.Capabilities)
			}
			list, err := c.ListTools(t.Context(), nil)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, tool := range list.Tools {
				names = append(names, tool.Name)
				if tool.Description == "" || tool.InputSchema == nil || tool.OutputSchema == nil {
					t.Errorf("tool %s lacks a description or schema", tool.Name)
				}
			}
			slices.Sort(names)
			if !slices.Equal(names, allTools) {
				t.Fatalf("tools %v, want %v", names, allTools)
			}

			id := c.launch()
			if _, err := e.mustPool(t, typ).Lookup(id); err != nil {
				t.Fatalf("the environment is not a session of the pool: %v", err)
			}

			// Shell: output, exit code, state across calls.
			r := c.sh(id, "cd /tmp && export GREETING=hi; echo out; echo err >&2; f() { return 3; }; f")
			if r.Stdout != "out\n" || r.Stderr != "err\n" || r.ExitCode != 3 || r.Status != "Failure" {
				t.Fatalf("shell: %+v", r)
			}
			if r := c.sh(id, `echo "$PWD $GREETING"`); r.Stdout != "/tmp hi\n" || r.ExitCode != 0 || r.Status != "Success" {
				t.Fatalf("shell state: %+v", r)
			}
			var stdin mcpserver.ShellOutput
			c.ok(mcpserver.ToolRunShell, map[string]any{"environmentId": id, "shellCommand": "tr a-z A-Z", "stdin": "quiet"}, &stdin)
			if stdin.Stdout != "QUIET" {
				t.Fatalf("stdin: %+v", stdin)
			}

			// execCommandAndArgs: no shell, arguments as given.
			var argv mcpserver.ShellOutput
			c.ok(mcpserver.ToolRunShell, map[string]any{"environmentId": id, "execCommandAndArgs": []string{"printf", "%s|", "a b", "$HOME", "c"}}, &argv)
			if argv.Stdout != "a b|$HOME|c|" || argv.ExitCode != 0 {
				t.Fatalf("execCommandAndArgs: %+v", argv)
			}

			// Python: state, trailing expression, exceptions.
			c.py(id, "import math\nx = 20")
			p := c.py(id, "print('py', x)\nmath.floor(x * 2.1)")
			if p.Stdout != "py 20\n" || string(p.Result) != "42" || p.Status != "Success" {
				t.Fatalf("python: %+v", p)
			}
			if p := c.py(id, "y = 1"); string(p.Result) != "null" {
				t.Fatalf("a statement's result should be null: %+v", p)
			}
			p = c.py(id, "1/0")
			if p.Status != "Failure" || p.Error == nil || !strings.Contains(p.Error.Message, "ZeroDivisionError") || !strings.Contains(p.Stderr, "Traceback") {
				t.Fatalf("python exception: %+v", p)
			}

			// Timeout: capped run time, the environment survives.
			start := time.Now()
			var slow mcpserver.ShellOutput
			c.ok(mcpserver.ToolRunShell, map[string]any{"environmentId": id, "shellCommand": "sleep 20", "timeoutInSeconds": 1}, &slow)
			if slow.Status != "Timeout" || slow.Error == nil || slow.Error.Type != "Timeout" || time.Since(start) > 10*time.Second {
				t.Fatalf("timeout: %+v after %v", slow, time.Since(start))
			}
			if r := c.sh(id, "echo alive"); r.Stdout != "alive\n" {
				t.Fatalf("after timeout: %+v", r)
			}

			// Files: text and binary upload, list, download (an image also
			// comes as image content), and the shell sees them.
			var up mcpserver.FileOutput
			c.ok(mcpserver.ToolUploadFile, map[string]any{"environmentId": id, "path": "in/hello.txt", "content": "héllo\n"}, &up)
			if up.Path != "in/hello.txt" || up.Size != int64(len("héllo\n")) {
				t.Fatalf("upload: %+v", up)
			}
			img := pngBytes(t)
			c.ok(mcpserver.ToolUploadFile, map[string]any{"environmentId": id, "path": "/mnt/data/in/dot.png",
				"content": base64.StdEncoding.EncodeToString(img), "encoding": "base64"}, &up)
			if r := c.sh(id, "cat /mnt/data/in/hello.txt && wc -c < /mnt/data/in/dot.png"); r.Stdout != "héllo\n"+itoa(len(img))+"\n" {
				t.Fatalf("shell reading uploads: %+v", r)
			}
			var ls struct {
				Path  string
				Files []mcpserver.FileEntry
			}
			c.ok(mcpserver.ToolListFiles, map[string]any{"environmentId": id, "path": "in"}, &ls)
			if ls.Path != "/mnt/data/in" || len(ls.Files) != 2 || ls.Files[0].Name != "in/dot.png" || ls.Files[1].Size != up.Size && ls.Files[1].Type != "file" {
				t.Fatalf("list: %+v", ls)
			}
			c.ok(mcpserver.ToolListFiles, map[string]any{"environmentId": id}, &ls)
			if len(ls.Files) != 1 || ls.Files[0].Name != "in" || ls.Files[0].Type != "directory" {
				t.Fatalf("list root: %+v", ls)
			}
			var down mcpserver.FileOutput
			c.ok(mcpserver.ToolDownloadFile, map[string]any{"environmentId": id, "path": "in/hello.txt"}, &down)
			if down.Encoding != "utf-8" || down.Content == nil || *down.Content != "héllo\n" {
				t.Fatalf("download text: %+v", down)
			}
			dr := c.call(mcpserver.ToolDownloadFile, map[string]any{"environmentId": id, "path": "in/dot.png"})
			decode(t, dr, &down)
			if raw, _ := base64.StdEncoding.DecodeString(*down.Content); down.Encoding != "base64" || !bytes.Equal(raw, img) {
				t.Fatalf("download binary: %+v", down)
			}
			if len(dr.Content) != 2 {
				t.Fatalf("an image download should also carry image content: %d items", len(dr.Content))
			}
			if ic, ok := dr.Content[1].(*mcp.ImageContent); !ok || ic.MIMEType != "image/png" || !bytes.Equal(ic.Data, img) {
				t.Fatalf("image content: %#v", dr.Content[1])
			}
			if msg := c.fails(mcpserver.ToolDownloadFile, map[string]any{"environmentId": id, "path": "nope.txt"}); !strings.Contains(msg, "does not exist") {
				t.Fatalf("missing file: %s", msg)
			}

			// Close: the environment is gone, and using it says what to do.
			var closed struct {
				EnvironmentID string
				Closed        bool
			}
			c.ok(mcpserver.ToolClose, map[string]any{"environmentId": id}, &closed)
			if !closed.Closed || closed.EnvironmentID != id {
				t.Fatalf("close: %+v", closed)
			}
			for tool, args := range map[string]map[string]any{
				mcpserver.ToolRunShell:     {"environmentId": id, "shellCommand": "true"},
				mcpserver.ToolRunPython:    {"environmentId": id, "pythonCode": "1"},
				mcpserver.ToolListFiles:    {"environmentId": id},
				mcpserver.ToolDownloadFile: {"environmentId": id, "path": "in/hello.txt"},
			} {
				msg := c.fails(tool, args)
				if !strings.Contains(msg, "launchShell") || !strings.Contains(msg, id) {
					t.Fatalf("%s after close: %s", tool, msg)
				}
			}
			if msg := c.fails(mcpserver.ToolClose, map[string]any{"environmentId": id}); !strings.Contains(msg, "does not exist") {
				t.Fatalf("second close: %s", msg)
			}
		})
	}
}

func (e *env) mustPool(t testing.TB, name string) *pool.Pool {
	p, err := e.mgr.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func pngBytes(t *testing.T) []byte {
	img := image.NewRGBA(image.Rect(0, 0, 4, 4))
	img.Set(1, 1, color.RGBA{R: 255, A: 255})
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }
