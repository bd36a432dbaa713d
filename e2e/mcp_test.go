package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os/exec"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/berth-dev/berth/controlplane"
	"github.com/berth-dev/berth/internal/testutil"
	"github.com/berth-dev/berth/mcpserver"
)

// mcpKeys adds a pool key to every request of an MCP client; the key can
// change while the MCP session stays open.
type mcpKeys struct {
	mu     sync.Mutex
	key    string
	bearer bool
}

func (k *mcpKeys) set(key string) {
	k.mu.Lock()
	k.key = key
	k.mu.Unlock()
}

func (k *mcpKeys) RoundTrip(r *http.Request) (*http.Response, error) {
	k.mu.Lock()
	key, bearer := k.key, k.bearer
	k.mu.Unlock()
	r = r.Clone(r.Context())
	switch {
	case key == "":
	case bearer:
		r.Header.Set("Authorization", "Bearer "+key)
	default:
		r.Header.Set("X-Ms-Apikey", key)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// mcpClient is a go-sdk MCP client session on a pool's endpoint.
type mcpClient struct {
	*mcp.ClientSession
	t    *testing.T
	keys *mcpKeys
}

func dialMCP(t *testing.T, url, key string, bearer bool, version string) (*mcpClient, error) {
	t.Helper()
	keys := &mcpKeys{key: key, bearer: bearer}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "berth-e2e", Version: "1"}, nil).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: url, HTTPClient: &http.Client{Transport: keys}, MaxRetries: -1},
		&mcp.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = cs.Close() })
	return &mcpClient{ClientSession: cs, t: t, keys: keys}, nil
}

func (c *mcpClient) try(tool string, args map[string]any) (*mcp.CallToolResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return c.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
}

// ok calls a tool that must succeed and decodes its structured content.
func (c *mcpClient) ok(tool string, args map[string]any, out any) {
	c.t.Helper()
	r, err := c.try(tool, args)
	if err != nil {
		c.t.Fatalf("%s: %v", tool, err)
	}
	if r.IsError {
		c.t.Fatalf("%s: tool error: %s", tool, mcpText(r))
	}
	raw, _ := json.Marshal(r.StructuredContent)
	if err := json.Unmarshal(raw, out); err != nil {
		c.t.Fatalf("%s: structuredContent %s: %v", tool, raw, err)
	}
	var fromText, structured any
	_ = json.Unmarshal(raw, &structured)
	if err := json.Unmarshal([]byte(mcpText(r)), &fromText); err != nil || !reflect.DeepEqual(fromText, structured) {
		c.t.Fatalf("%s: text item %q is not the structured content %s", tool, mcpText(r), raw)
	}
}

// fails calls a tool that must return a tool error, and returns its text.
func (c *mcpClient) fails(tool string, args map[string]any) string {
	c.t.Helper()
	r, err := c.try(tool, args)
	if err != nil {
		c.t.Fatalf("%s: %v", tool, err)
	}
	if !r.IsError {
		c.t.Fatalf("%s: expected a tool error: %s", tool, mcpText(r))
	}
	return mcpText(r)
}

func (c *mcpClient) launch() string {
	c.t.Helper()
	var out struct{ EnvironmentID string }
	c.ok(mcpserver.ToolLaunchShell, map[string]any{}, &out)
	return out.EnvironmentID
}

func (c *mcpClient) sh(id, cmd string) mcpserver.ShellOutput {
	c.t.Helper()
	var out mcpserver.ShellOutput
	c.ok(mcpserver.ToolRunShell, map[string]any{"environmentId": id, "shellCommand": cmd}, &out)
	return out
}

func mcpText(r *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range r.Content {
		if t, ok := c.(*mcp.TextContent); ok {
			b.WriteString(t.Text)
		}
	}
	return b.String()
}

// mcpURL reads a pool's MCP endpoint from `pool show -o json`.
func (b *berth) mcpURL(name string) string {
	b.t.Helper()
	var v controlplane.PoolView
	b.cliJSON(&v, "pool", "show", name)
	if v.Endpoints.MCP != b.info.PublicURL+"/pools/"+name+"/mcp" {
		b.t.Fatalf("pool show %s: MCP endpoint %q", name, v.Endpoints.MCP)
	}
	return v.Endpoints.MCP
}

// TestMCP drives pools' MCP endpoints on a real `berth up`: every tool on
// both pool types and both runtimes, the data plane seeing MCP
// environments, and the CLI's key rotation and MCP switch taking effect at
// once.
func TestMCP(t *testing.T) {
	b := startBerth(t, "")

	// The default pool serves MCP with the key `pool credentials` shows.
	var cred struct{ APIKey string }
	b.cliJSON(&cred, "pool", "credentials", "default")
	def, err := dialMCP(t, b.mcpURL("default"), cred.APIKey, false, "")
	if err != nil {
		t.Fatal(err)
	}
	if info := def.InitializeResult().ServerInfo; info.Name != "berth" || info.Version == "" {
		t.Fatalf("serverInfo: %+v", info)
	}

	for _, rt := range runtimes {
		for _, typ := range []string{"shell", "python"} {
			t.Run(rt+"-"+typ, func(t *testing.T) {
				name := "mcp-" + typ + "-" + rt
				key := b.createPool(name, "--runtime", rt, "--type", typ, "--mcp", "--ready", "1")
				// gVisor pools are driven with a bearer token and the
				// stateful protocol, bwrap ones with x-ms-apikey and the
				// stateless one.
				bearer, version := rt == "gvisor", "2025-03-26"
				if !bearer {
					version = "2026-07-28"
				}
				c, err := dialMCP(t, b.mcpURL(name), key, bearer, version)
				if err != nil {
					t.Fatal(err)
				}
				id := c.launch()

				if r := c.sh(id, "cd /tmp && export V=1; echo out; echo err >&2; false"); r.Stdout != "out\n" || r.Stderr != "err\n" || r.ExitCode != 1 {
					t.Fatalf("shell: %+v", r)
				}
				if r := c.sh(id, `echo "$PWD $V" && echo made-by-mcp > /mnt/data/state.txt`); r.Stdout != "/tmp 1\n" {
					t.Fatalf("shell state: %+v", r)
				}
				var argv mcpserver.ShellOutput
				c.ok(mcpserver.ToolRunShell, map[string]any{"environmentId": id, "execCommandAndArgs": []string{"cat", "state.txt"}}, &argv)
				if argv.Stdout != "made-by-mcp\n" || argv.ExitCode != 0 {
					t.Fatalf("execCommandAndArgs: %+v", argv)
				}
				var py mcpserver.PythonOutput
				c.ok(mcpserver.ToolRunPython, map[string]any{"environmentId": id, "pythonCode": "import os\nn = len(open('state.txt').read())"}, &py)
				c.ok(mcpserver.ToolRunPython, map[string]any{"environmentId": id, "pythonCode": "print(os.getcwd())\nn * 2"}, &py)
				if py.Stdout != "/mnt/data\n" || string(py.Result) != "24" {
					t.Fatalf("python: %+v", py)
				}

				var up mcpserver.FileOutput
				c.ok(mcpserver.ToolUploadFile, map[string]any{"environmentId": id, "path": "bin/blob",
					"content": base64.StdEncoding.EncodeToString([]byte{0, 1, 2, 255}), "encoding": "base64"}, &up)
				var ls struct{ Files []mcpserver.FileEntry }
				c.ok(mcpserver.ToolListFiles, map[string]any{"environmentId": id}, &ls)
				if len(ls.Files) != 2 || ls.Files[0].Name != "bin" || ls.Files[1].Name != "state.txt" {
					t.Fatalf("list: %+v", ls.Files)
				}
				var down mcpserver.FileOutput
				c.ok(mcpserver.ToolDownloadFile, map[string]any{"environmentId": id, "path": "bin/blob"}, &down)
				if down.Encoding != "base64" || *down.Content != "AAEC/w==" || down.Size != 4 {
					t.Fatalf("download: %+v", down)
				}

				// The data plane sees the environment as a session.
				if s := b.do("GET", "/pools/"+name+"/sessions", keyHeader(key), nil); !strings.Contains(string(s.Body), `"identifier":"`+id+`"`) {
					t.Fatalf("sessions list lacks %s: %s", id, s.Body)
				}
				code := "cat /mnt/data/state.txt"
				if typ == "python" {
					code = "open('state.txt').read()"
				}
				if r := b.execute(name, key, id, code); !strings.Contains(r.Stdout+string(r.Result), "made-by-mcp") {
					t.Fatalf("data plane in the MCP environment: %+v", r)
				}

				// Errors a model can act on.
				if msg := c.fails(mcpserver.ToolRunShell, map[string]any{"environmentId": "env-000000000000000000000000", "shellCommand": "true"}); !strings.Contains(msg, "launchShell") {
					t.Fatalf("unknown environment: %s", msg)
				}
				if msg := c.fails(mcpserver.ToolRunPython, map[string]any{"environmentId": id, "code": "1"}); !strings.Contains(msg, `"code"`) {
					t.Fatalf("bad argument: %s", msg)
				}

				var closed struct{ Closed bool }
				c.ok(mcpserver.ToolClose, map[string]any{"environmentId": id}, &closed)
				if msg := c.fails(mcpserver.ToolRunShell, map[string]any{"environmentId": id, "shellCommand": "true"}); !strings.Contains(msg, "launchShell") {
					t.Fatalf("closed environment: %s", msg)
				}
			})
		}
	}

	t.Run("cli", func(t *testing.T) {
		key := b.createPool("mcp-cli", "--mcp", "--ready", "1")
		u := b.mcpURL("mcp-cli")
		c, err := dialMCP(t, u, key, false, "2025-11-25")
		if err != nil {
			t.Fatal(err)
		}
		id := c.launch()

		// rotate-key: the old key fails on the next request of the open
		// session; the session goes on with the new key.
		var rot struct{ APIKey string }
		b.cliJSON(&rot, "pool", "rotate-key", "mcp-cli")
		if _, err := c.try(mcpserver.ToolRunShell, map[string]any{"environmentId": id, "shellCommand": "true"}); err == nil || !strings.Contains(err.Error(), "invalid API key") {
			t.Fatalf("old key after rotate-key: %v", err)
		}
		c.keys.set(rot.APIKey)
		if r := c.sh(id, "echo rotated"); r.Stdout != "rotated\n" {
			t.Fatalf("new key: %+v", r)
		}

		// update --mcp=false closes the endpoint at once.
		b.cli("pool", "update", "mcp-cli", "--mcp=false")
		r := b.do("POST", "/pools/mcp-cli/mcp", http.Header{"X-Ms-Apikey": {rot.APIKey}, "Content-Type": {"application/json"},
			"Accept": {"application/json, text/event-stream"}}, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		if r.Status != http.StatusNotFound || !strings.Contains(string(r.Body), "disabled") || !strings.Contains(string(r.Body), `"jsonrpc":"2.0"`) {
			t.Fatalf("MCP off: %d %s", r.Status, r.Body)
		}
		if _, err := c.try(mcpserver.ToolRunShell, map[string]any{"environmentId": id, "shellCommand": "true"}); err == nil {
			t.Fatal("the open session still works after --mcp=false")
		}
		b.cli("pool", "update", "mcp-cli", "--mcp=true")
		if r := c.sh(id, "echo back"); r.Stdout != "back\n" {
			t.Fatalf("MCP on again: %+v", r)
		}

		// --mcp-auth none turns the key off for MCP only.
		b.cli("pool", "update", "mcp-cli", "--mcp-auth", "none")
		open, err := dialMCP(t, u, "", false, "2025-11-25")
		if err != nil {
			t.Fatalf("mcp-auth none: %v", err)
		}
		if r := open.sh(id, "echo open"); r.Stdout != "open\n" {
			t.Fatalf("mcp-auth none: %+v", r)
		}
		if r := b.executeRaw("mcp-cli", "", id, "true"); r.Status != http.StatusUnauthorized {
			t.Fatalf("the data plane must still want the key: %d", r.Status)
		}

		// A pool created without --mcp has no endpoint.
		b.createPool("no-mcp", "--ready", "0")
		if _, err := dialMCP(t, b.info.PublicURL+"/pools/no-mcp/mcp", key, false, "2025-11-25"); err == nil || !strings.Contains(err.Error(), "disabled") {
			t.Fatalf("pool without MCP: %v", err)
		}
	})
}

// TestMCPAllowOrigin checks `berth up --allow-origin`: listed browser
// origins get CORS answers, others 403, and a malformed one stops berth up.
func TestMCPAllowOrigin(t *testing.T) {
	b := startBerth(t, "", "--allow-origin", "https://app.example.com,https://b.example:8443", "--allow-origin", "http://c.example")
	var cred struct{ APIKey string }
	b.cliJSON(&cred, "pool", "credentials", "default")
	post := func(origin string) resp {
		return b.do("POST", "/pools/default/mcp", http.Header{"X-Ms-Apikey": {cred.APIKey}, "Origin": {origin},
			"Content-Type": {"application/json"}, "Accept": {"application/json, text/event-stream"}},
			strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"browser","version":"1"}}}`))
	}
	for _, o := range []string{"https://app.example.com", "https://b.example:8443", "http://c.example", "http://localhost:3000"} {
		if r := post(o); r.Status != http.StatusOK || r.Header.Get("Access-Control-Allow-Origin") != o {
			t.Errorf("origin %s: %d %v", o, r.Status, r.Header)
		}
	}
	for _, o := range []string{"https://evil.example", "https://b.example"} {
		if r := post(o); r.Status != http.StatusForbidden || !strings.Contains(string(r.Body), "--allow-origin") {
			t.Errorf("origin %s: %d %s", o, r.Status, r.Body)
		}
	}
	pre := b.do("OPTIONS", "/pools/default/mcp", http.Header{"Origin": {"https://app.example.com"}, "Access-Control-Request-Method": {"POST"},
		"Access-Control-Request-Headers": {"x-ms-apikey,content-type,mcp-session-id"}}, nil)
	if pre.Status != http.StatusNoContent || !strings.Contains(strings.ToLower(pre.Header.Get("Access-Control-Allow-Headers")), "mcp-session-id") {
		t.Fatalf("preflight: %d %v", pre.Status, pre.Header)
	}

	cmd := exec.Command(testutil.BerthBinary(t), "up", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--runsc", runsc(t), "--allow-origin", "app.example.com")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), `allowed origin "app.example.com"`) {
		t.Fatalf("malformed --allow-origin: %v\n%s", err, out)
	}
}
