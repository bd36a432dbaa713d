package pool

import (
	"reflect"
	"strings"
	"testing"

	"github.com/berth-dev/berth/image"
)

func TestCustomConfig(t *testing.T) {
	ctr := func(port int) *Container { return &Container{TargetPort: port} }
	cases := []struct {
		name string
		cfg  Config
		err  string // "" for valid
	}{
		{"custom", Config{Type: TypeCustom, Image: "r.example/app:1", Container: ctr(8080)}, ""},
		{"custom without image", Config{Type: TypeCustom, Container: ctr(8080)}, "needs --image"},
		{"custom without port", Config{Type: TypeCustom, Image: "r.example/app:1"}, "needs --target-port"},
		{"custom, port too high", Config{Type: TypeCustom, Image: "r.example/app:1", Container: ctr(70000)}, "needs --target-port"},
		{"custom with MCP", Config{Type: TypeCustom, Image: "r.example/app:1", Container: ctr(80), MCP: true}, "no MCP endpoint"},
		{"custom, bad env name", Config{Type: TypeCustom, Image: "r.example/app:1", Container: &Container{TargetPort: 80, Env: map[string]string{"A=B": "x"}}}, "not valid"},
		{"python with a container", Config{Type: TypePython, Image: "r.example/py:1", Container: ctr(80)}, "for custom pools"},
		{"python on an image", Config{Type: TypePython, Image: " r.example/py:1 "}, ""},
		{"image with a space", Config{Type: TypeShell, Image: "r.example/a b"}, "not an image reference"},
		{"unknown type", Config{Type: "node"}, "must be"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.cfg.Name = "p"
			err := c.cfg.Normalize()
			switch {
			case c.err == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
				t.Fatalf("error %v, want one with %q", err, c.err)
			}
		})
	}
}

func TestShapeFollowsImageAndContainer(t *testing.T) {
	base := Config{Type: TypeCustom, Image: "r/a:1", ImageDigest: "sha256:1", Container: &Container{TargetPort: 80, Env: map[string]string{"A": "1", "B": "2"}}}
	same := base
	same.Container = &Container{TargetPort: 80, Env: map[string]string{"B": "2", "A": "1"}}
	if base.shape() != same.shape() {
		t.Fatal("equal containers have different shapes")
	}
	for _, change := range []func(*Config){
		func(c *Config) { c.ImageDigest = "sha256:2" },
		func(c *Config) { c.Container = &Container{TargetPort: 81} },
		func(c *Config) { c.Container = &Container{TargetPort: 80, Args: []string{"-v"}} },
	} {
		c := base
		change(&c)
		if c.shape() == base.shape() {
			t.Fatalf("a change to %+v keeps the shape", c)
		}
	}
}

func TestServiceArgvAndEnv(t *testing.T) {
	ic := image.Config{Entrypoint: []string{"/bin/server"}, Cmd: []string{"--port", "80"}, Env: []string{"PATH=/bin", "A=image"}, Home: "/home/app"}
	cases := []struct {
		c    Container
		want []string
	}{
		{Container{}, []string{"/bin/server", "--port", "80"}},
		{Container{Args: []string{"-v"}}, []string{"/bin/server", "-v"}},
		{Container{Command: []string{"/bin/other"}}, []string{"/bin/other"}},
		{Container{Command: []string{"/bin/other"}, Args: []string{"x"}}, []string{"/bin/other", "x"}},
	}
	for _, c := range cases {
		got, err := serviceArgv(&c.c, ic)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%+v: %v %v, want %v", c.c, got, err, c.want)
		}
	}
	if _, err := serviceArgv(&Container{}, image.Config{}); err == nil {
		t.Error("an image with nothing to run is accepted")
	}
	env := serviceEnv(&Container{TargetPort: 8080, Env: map[string]string{"A": "pool"}}, ic)
	want := map[string]string{"PATH": "/bin", "A": "pool", "HOME": "/home/app", "PORT": "8080"}
	if !reflect.DeepEqual(env, want) {
		t.Errorf("env %v, want %v", env, want)
	}
}
