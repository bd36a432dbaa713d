package app

import (
	"errors"
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	for name, ok := range map[string]bool{
		"tasks": true, "my-app2": true, "ab": true,
		"a": false, "Tasks": false, "2app": false, "app-": false, "a--b": false, "a---label": false,
		strings.Repeat("a", 32): true, strings.Repeat("a", 33): false, "a.b": false, "": false,
	} {
		if err := ValidName(name); (err == nil) != ok {
			t.Errorf("ValidName(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}

func TestConfigNormalize(t *testing.T) {
	base := func() Config { return Config{Command: "./server"} }
	for _, tc := range []struct {
		name   string
		edit   func(*Config)
		errHas string // "" means valid
		check  func(*testing.T, Config)
	}{
		{"defaults", func(*Config) {}, "", func(t *testing.T, c Config) {
			if c.Transport != "http" || c.Port != 8080 || c.Path != "/mcp" || c.Min != 0 || c.Max != 10 ||
				c.Concurrency != 10 || c.ScaleDownAfterSeconds != 300 || c.MemoryBytes != 512<<20 || c.CPU != 1 ||
				c.Egress != "disabled" || c.Probe.Type != "tcp" {
				t.Errorf("defaults: %+v", c)
			}
		}},
		{"stdio probes nothing by default", func(c *Config) { c.Transport = "stdio" }, "", func(t *testing.T, c Config) {
			if c.Probe.Type != "none" {
				t.Errorf("probe %q", c.Probe.Type)
			}
		}},
		{"no command", func(c *Config) { c.Command = "  " }, "--command is required", nil},
		{"transport", func(c *Config) { c.Transport = "grpc" }, "transport must be http or stdio", nil},
		{"port", func(c *Config) { c.Port = 70000 }, "port must be 1-65535", nil},
		{"path", func(c *Config) { c.Path = "mcp" }, "path must start with /", nil},
		{"env name", func(c *Config) { c.Env = map[string]string{"A-B": "1"} }, "not a valid environment variable name", nil},
		{"ingress", func(c *Config) { c.Ingress = "public" }, "ingress must be external or internal", nil},
		{"volume name", func(c *Config) { c.Volumes = []Volume{{Name: "Data", Path: "/data"}} }, "not a valid volume name", nil},
		{"volume over /app", func(c *Config) { c.Volumes = []Volume{{Name: "data", Path: "/app"}} }, "not a usable mount path", nil},
		{"volume climbing out", func(c *Config) { c.Volumes = []Volume{{Name: "data", Path: "/data/../usr"}} }, "not a usable mount path", nil},
		{"two volumes at one path", func(c *Config) {
			c.Volumes = []Volume{{Name: "a1", Path: "/data"}, {Name: "b1", Path: "/data"}}
		}, "two volumes at /data", nil},
		{"min above max", func(c *Config) { c.Min, c.Max = 3, 2 }, "0 <= min <= max <= 100", nil},
		{"max too high", func(c *Config) { c.Max = 101 }, "0 <= min <= max <= 100", nil},
		{"concurrency", func(c *Config) { c.Concurrency = -1 }, "concurrency must be at least 1", nil},
		{"scale-down", func(c *Config) { c.ScaleDownAfterSeconds = -5 }, "scale-down-after must be at least 1s", nil},
		{"egress", func(c *Config) { c.Egress = "open" }, "egress must be disabled, enabled or allow=", nil},
		{"egress allow-list", func(c *Config) { c.Egress = "allow=a.example,*.b.example,bad host" }, "not a host name", nil},
		{"inject without allow-list", func(c *Config) { c.Egress, c.EgressInject = "enabled", []string{"a.example:X=secretref:S"} }, "need an allow-list", nil},
		{"inject a literal", func(c *Config) { c.Egress, c.EgressInject = "allow=a.example", []string{"a.example:X=hunter2"} }, "secretref:NAME", nil},
		{"suffix", func(c *Config) { c.RevisionSuffix = "Blue" }, "not a valid revision suffix", nil},
		{"http probe path", func(c *Config) { c.Probe = Probe{Type: "http", Path: "health"} }, "http probe needs a path", nil},
		{"probe type", func(c *Config) { c.Probe = Probe{Type: "exec"} }, "probe must be tcp, http:/PATH or none", nil},
		{"secret env", func(c *Config) {
			c.SecretEnv, c.SecretVolume = map[string]string{"DB_PASSWORD": "db-password"}, "/mnt/secrets"
		}, "", nil},
		{"secret env name", func(c *Config) { c.SecretEnv = map[string]string{"A-B": "x"} }, "not a valid environment variable name", nil},
		{"secret name", func(c *Config) { c.SecretEnv = map[string]string{"A": "Bad_Name"} }, "not a valid secret name", nil},
		{"env both value and secret", func(c *Config) {
			c.Env, c.SecretEnv = map[string]string{"A": "1"}, map[string]string{"A": "a"}
		}, "both to a value and to a secret", nil},
		{"secret volume over /app", func(c *Config) { c.SecretVolume = "/app" }, "not a usable mount path", nil},
		{"secret volume and volume at one path", func(c *Config) {
			c.SecretVolume, c.Volumes = "/data", []Volume{{Name: "a1", Path: "/data"}}
		}, "two volumes at /data", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.edit(&c)
			err := c.Normalize()
			if tc.errHas == "" {
				if err != nil {
					t.Fatalf("Normalize: %v", err)
				}
				if tc.check != nil {
					tc.check(t, c)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("Normalize = %v, want a ConfigError with %q", err, tc.errHas)
			}
		})
	}
}

func TestTrafficRules(t *testing.T) {
	d := Doc{Name: "tasks", Revisions: []Revision{{Name: "tasks--r1"}, {Name: "tasks--r2"}, {Name: "tasks--r3"}},
		Traffic: []TrafficTarget{{"tasks--r1", 80}, {"tasks--r2", 20}, {"tasks--r3", 0}},
		Labels:  map[string]string{"blue": "tasks--r3"}}
	if got := strings.Join(d.active(), ","); got != "tasks--r1,tasks--r2,tasks--r3" {
		t.Errorf("active = %s: a revision with traffic or a label must run", got)
	}
	d.Labels = nil
	if got := strings.Join(d.active(), ","); got != "tasks--r1,tasks--r2" {
		t.Errorf("active = %s: a revision at 0%% without a label must not run", got)
	}
	for _, tc := range []struct {
		split  []TrafficTarget
		errHas string
	}{
		{[]TrafficTarget{{"tasks--r1", 50}, {"tasks--r2", 50}}, ""},
		{[]TrafficTarget{{"tasks--r1", 100}, {"tasks--r2", 0}}, ""},
		{[]TrafficTarget{{"tasks--r1", 50}, {"tasks--r2", 40}}, "add up to 100%, not 90%"},
		{[]TrafficTarget{{"tasks--r9", 100}}, `revision "tasks--r9" does not exist`},
		{[]TrafficTarget{{"tasks--r1", 120}, {"tasks--r2", -20}}, "must be 0-100%"},
	} {
		err := d.validateTraffic(tc.split)
		if (tc.errHas == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.errHas)) {
			t.Errorf("validateTraffic(%v) = %v, want %q", tc.split, err, tc.errHas)
		}
	}
}

func TestAuthNormalize(t *testing.T) {
	for _, c := range []struct {
		auth Auth
		err  string // part of the error; "" for none
	}{
		{Auth{}, ""},
		{Auth{Mode: AuthAPIKey}, ""},
		{Auth{Mode: AuthOIDC, Issuer: "https://idp.example.com", Audience: "https://app.example.com/mcp"}, ""},
		{Auth{Mode: AuthOIDC, Issuer: "http://127.0.0.1:9000", Audience: "a"}, ""},
		{Auth{Mode: "jwt"}, "--auth must be"},
		{Auth{Mode: AuthOIDC, Audience: "a"}, "--oidc-issuer"},
		{Auth{Mode: AuthOIDC, Issuer: "http://idp.example.com", Audience: "a"}, "https"},
		{Auth{Mode: AuthOIDC, Issuer: "https://idp.example.com"}, "--oidc-audience"},
		{Auth{Mode: AuthAPIKey, Issuer: "https://idp.example.com"}, "need --auth oidc"},
		{Auth{Mode: AuthNone, ForwardToken: true}, "--auth-forward-token"},
	} {
		err := c.auth.Normalize()
		if (err == nil) != (c.err == "") || err != nil && !strings.Contains(err.Error(), c.err) {
			t.Errorf("%+v: %v, want %q", c.auth, err, c.err)
		}
	}
}
