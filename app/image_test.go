package app

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/berth-dev/berth/image"
)

func TestImageCommand(t *testing.T) {
	root := t.TempDir()
	for _, p := range []string{"usr/local/bin/node", "bin/sh", "opt/x/bin/tool"} {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	im := &image.Image{RootFS: root, Config: image.Config{
		Entrypoint: []string{"node"}, Cmd: []string{"server.js", "--port", "3000"},
		Env: []string{"PATH=/usr/local/bin:/bin", "A=image", "B=image"}, WorkingDir: "/app", Home: "/home/app",
	}}
	for _, tc := range []struct {
		name     string
		cfg      Config
		im       *image.Image
		wantArgv []string
		wantDir  string
	}{
		{name: "the image's", im: im, wantArgv: []string{"/usr/local/bin/node", "server.js", "--port", "3000"}, wantDir: "/app"},
		{name: "args replace Cmd", cfg: Config{Args: []string{"other.js"}}, im: im, wantArgv: []string{"/usr/local/bin/node", "other.js"}, wantDir: "/app"},
		{name: "entrypoint drops Cmd", cfg: Config{Entrypoint: []string{"sh", "-c", "x"}}, im: im, wantArgv: []string{"/bin/sh", "-c", "x"}, wantDir: "/app"},
		{name: "both", cfg: Config{Entrypoint: []string{"/opt/x/bin/tool"}, Args: []string{"a"}}, im: im, wantArgv: []string{"/opt/x/bin/tool", "a"}, wantDir: "/app"},
		{name: "not on PATH stays", cfg: Config{Entrypoint: []string{"tool"}}, im: im, wantArgv: []string{"tool"}, wantDir: "/app"},
		{name: "no working dir", im: &image.Image{RootFS: root, Config: image.Config{Cmd: []string{"/bin/sh"}}}, wantArgv: []string{"/bin/sh"}, wantDir: "/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			argv, _, dir := imageCommand(tc.cfg, tc.im, nil)
			if !reflect.DeepEqual(argv, tc.wantArgv) || dir != tc.wantDir {
				t.Fatalf("argv %q dir %q, want %q %q", argv, dir, tc.wantArgv, tc.wantDir)
			}
		})
	}
	_, env, _ := imageCommand(Config{}, im, map[string]string{"B": "app", "PORT": "3000"})
	want := map[string]string{"PATH": "/usr/local/bin:/bin", "A": "image", "B": "app", "PORT": "3000", "HOME": "/home/app"}
	if !reflect.DeepEqual(env, want) {
		t.Fatalf("env %v, want %v", env, want)
	}
	if im.Config.Entrypoint[0] != "node" {
		t.Fatal("imageCommand changed the image's config")
	}
}

func TestNormalizeImage(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		err  string
	}{
		{name: "image without command", cfg: Config{Source: &Source{Image: "r.example/a@sha256:00"}}},
		{name: "shell command with an image", cfg: Config{Command: "x", Source: &Source{Image: "r.example/a:1"}},
			err: "an app from an image takes its command as an argv (entrypoint, args; the CLI's --command and --args), not as a shell command"},
		{name: "args without an image", cfg: Config{Command: "x", Args: []string{"a"}}, err: "entrypoint and args are for apps from an image (--image); give --command"},
		{name: "bad registry", cfg: Config{Source: &Source{Image: "r.example/a:1"}, Registries: []Registry{{Server: "https://r.example"}}},
			err: `registry server: host or host:port, as in image references, got "https://r.example"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Normalize()
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || err.Error() != tc.err) {
				t.Fatalf("error %v, want %q", err, tc.err)
			}
		})
	}
}
