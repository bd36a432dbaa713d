package main

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/berth-dev/berth/app"
)

// TestSecretRefs: --env K=secretref:NAME, and secretRef and a Secret
// volume in a manifest, become the same references.
func TestSecretRefs(t *testing.T) {
	d := deployFlags{memory: "512Mi", disk: "1Gi", scaleDown: time.Minute, env: multiFlag{"PLAIN=v", "DB_PASSWORD=secretref:db-password"}, secretVolume: "/mnt/secrets"}
	cli, err := d.config()
	if err != nil {
		t.Fatal(err)
	}
	const doc = `
name: vault
properties:
  template:
    containers:
      - command: ["./app"]
        env: [{name: PLAIN, value: v}, {name: DB_PASSWORD, secretRef: db-password}]
        volumeMounts: [{volumeName: data, mountPath: /data}, {volumeName: secrets, mountPath: /mnt/secrets}]
    volumes: [{name: data}, {name: secrets, storageType: Secret}]
`
	var m manifest
	dec := yaml.NewDecoder(bytes.NewReader([]byte(doc)))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	yml, err := m.config(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]app.Config{"cli": cli, "yaml": yml} {
		if !reflect.DeepEqual(c.Env, map[string]string{"PLAIN": "v"}) || !reflect.DeepEqual(c.SecretEnv, map[string]string{"DB_PASSWORD": "db-password"}) ||
			c.SecretVolume != "/mnt/secrets" {
			t.Errorf("%s: env %v secretEnv %v secretVolume %q", name, c.Env, c.SecretEnv, c.SecretVolume)
		}
	}
	if len(yml.Volumes) != 1 || yml.Volumes[0].Name != "data" {
		t.Errorf("yaml volumes: %+v", yml.Volumes)
	}
	if _, err := (&deployFlags{memory: "1Mi", disk: "1Gi", scaleDown: time.Minute, env: multiFlag{"A=secretref:"}}).config(); err == nil {
		t.Error("--env A=secretref: with no name was accepted")
	}
}
