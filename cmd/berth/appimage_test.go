package main

import (
	"bytes"
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/berth-dev/berth/app"
)

func TestSplitArgs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		bad  bool
	}{
		{in: "", want: nil},
		{in: "/srv --port 80", want: []string{"/srv", "--port", "80"}},
		{in: `  a   'b c'  "d \"e\""  f\ g `, want: []string{"a", "b c", `d "e"`, "f g"}},
		{in: `''`, want: []string{""}},
		{in: `$HOME`, want: []string{"$HOME"}},
		{in: `'open`, bad: true},
		{in: `x\`, bad: true},
	} {
		got, err := splitArgs(tc.in)
		if (err != nil) != tc.bad || !tc.bad && !reflect.DeepEqual(got, tc.want) {
			t.Errorf("splitArgs(%q) = %q, %v; want %q (error %v)", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

const imageManifest = `name: tasks
properties:
  configuration:
    ingress: {transport: http}
    registries:
      - server: registry.example:5000
        username: bob
        passwordSecretRef: registry-password
  template:
    containers:
      - name: tasks
        image: registry.example:5000/tasks:1
        command: ["/srv", "--db"]
        args: ["/data/tasks.db"]
        env:
          - {name: LOG_LEVEL, value: debug}
          - {name: TOKEN, secretRef: tasks-token}
        resources: {cpu: 0.5, memory: 0.5Gi}
`

func TestManifestImage(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       app.Config
		err        string
	}{
		{name: "image", yaml: imageManifest, want: app.Config{
			Transport: "http", Source: &app.Source{Image: "registry.example:5000/tasks:1"},
			Entrypoint: []string{"/srv", "--db"}, Args: []string{"/data/tasks.db"},
			Env: map[string]string{"LOG_LEVEL": "debug"}, SecretEnv: map[string]string{"TOKEN": "tasks-token"}, CPU: 0.5, MemoryBytes: 512 << 20,
			Registries: []app.Registry{{Server: "registry.example:5000", Username: "bob", PasswordSecretRef: "registry-password"}},
		}},
		{name: "command as a string", yaml: `name: a
properties:
  template:
    containers: [{image: "r.example/a:1", command: "/bin/srv 'two words'"}]
`, want: app.Config{Source: &app.Source{Image: "r.example/a:1"}, Entrypoint: []string{"/bin/srv", "two words"}}},
		{name: "no command: the image's", yaml: `name: a
properties:
  template:
    containers: [{image: "r.example/a:1"}]
`, want: app.Config{Source: &app.Source{Image: "r.example/a:1"}}},
		{name: "registries without an image", yaml: `name: a
properties:
  configuration:
    registries: [{server: r.example, username: u, passwordSecretRef: p}]
  template:
    containers: [{command: "x"}]
`, err: "configuration.registries needs a container with an image"},
		{name: "identity", yaml: `name: a
properties:
  configuration:
    registries: [{server: r.example, identity: system}]
  template:
    containers: [{image: r.example/a:1}]
`, err: "registries r.example: identity: Berth logs in with a username and password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m manifest
			dec := yaml.NewDecoder(bytes.NewReader([]byte(tc.yaml)))
			dec.KnownFields(true)
			if err := dec.Decode(&m); err != nil {
				t.Fatal(err)
			}
			got, err := m.config(".")
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("config\n%+v\nwant\n%+v", got, tc.want)
			}
			if err := got.Normalize(); err != nil {
				t.Fatalf("normalize: %v", err)
			}
		})
	}
}
