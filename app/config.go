// Package app hosts MCP servers ("apps") the way Azure Container Apps
// hosts a standalone app: each deploy makes an immutable revision; a
// revision runs replicas in the sandbox runtime, each started with the
// app's command, probed for readiness, restarted with back-off when it
// crashes, and scaled between min and max by concurrent requests (down to
// zero); traffic is split between revisions by weight, and labels pin a URL
// to one revision. The gateway package routes requests to replicas.
package app

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/edge/cors"
	"github.com/berth-dev/berth/egress"
	"github.com/berth-dev/berth/source"
)

// Transports.
const (
	TransportHTTP  = "http"
	TransportStdio = "stdio"
)

// Config is what a deploy asks for; a revision keeps a copy.
type Config struct {
	// Command runs with /bin/sh -c in /app (the app's files). An app
	// from an image runs the image's Entrypoint and Cmd instead, or
	// Entrypoint and Args when set (as Kubernetes' command and args).
	Command string `json:"command"`
	// Entrypoint replaces the image's Entrypoint; Args its Cmd.
	Entrypoint []string `json:"entrypoint,omitempty"`
	Args       []string `json:"args,omitempty"`
	// Registries are logins for the registries of the app's image
	// (Container Apps' configuration.registries). A password given is
	// sealed in the server's store; revisions keep server and user only.
	Registries []Registry `json:"registries,omitempty"`
	// Source is where the revision's files (read-only at /app) come from;
	// nil for none.
	Source *Source `json:"source,omitempty"`
	// Dir is what revisions deployed before uploads recorded: a directory
	// of the server's host, copied into the revision then. It is only
	// read (and migrated to a Source at start); a deploy naming it is
	// refused, since the server never copies a host path a client names.
	Dir       string            `json:"dir,omitempty"`
	Transport string            `json:"transport"`
	Port      int               `json:"port"`
	Path      string            `json:"path"`
	Env       map[string]string `json:"env,omitempty"`
	Volumes   []Volume          `json:"volumes,omitempty"`
	Min       int               `json:"minReplicas"`
	Max       int               `json:"maxReplicas"`
	// Concurrency is the target of concurrent requests per replica.
	Concurrency           int   `json:"concurrency"`
	ScaleDownAfterSeconds int   `json:"scaleDownAfterSeconds"`
	MemoryBytes           int64 `json:"memoryBytes"`
	// DiskBytes bounds each replica's writable space on disk (/tmp; its
	// volumes are the app's and not counted).
	DiskBytes int64   `json:"diskBytes,omitempty"`
	CPU       float64 `json:"cpu"`
	Egress    string  `json:"egress"` // "disabled", "enabled" or "allow=HOST,…"
	// EgressInject are headers the egress proxy adds to HTTPS requests
	// (HOST:Header=secretref:NAME), with an allow-list only.
	EgressInject   []string `json:"egressInject,omitempty"`
	RevisionSuffix string   `json:"revisionSuffix,omitempty"`
	Probe          Probe    `json:"probe"`
	// Auth, if set, replaces the app's authentication with the deploy
	// (it is the app's, not the revision's, which does not keep it).
	Auth *Auth `json:"auth,omitempty"`
	// CORS is the app's CORS policy; the app's is its latest deploy's
	// (ingress is app-wide, as in Container Apps), nil for none.
	CORS *cors.Spec `json:"corsPolicy,omitempty"`
	// Ingress, if set (external or internal), replaces the app's ingress
	// with the deploy (it is the app's, as Auth is).
	Ingress string `json:"ingress,omitempty"`

	// SecretEnv sets environment variables (the keys) to the values of
	// the app's secrets (the values: secret names; see secrets.go).
	SecretEnv map[string]string `json:"secretEnv,omitempty"`
	// SecretVolume, if set, is where every secret of the app is a file
	// (read-only, mode 0400).
	SecretVolume string `json:"secretVolume,omitempty"`
}

// Source names a revision's files.
type Source struct {
	// Archive is the digest of an archive uploaded to the server (POST
	// /v1/sources; the CLI's --dir), unpacked into the revision.
	Archive string `json:"archive,omitempty"`
	// Image is an image reference. A deploy resolves a tag to the
	// image's digest and the revision keeps "REPO@sha256:…", so its
	// files never change under it.
	Image string `json:"image,omitempty"`
	// ImageTag is the reference as the deploy named it (for show).
	ImageTag string `json:"imageTag,omitempty"`
}

// Registry is a login for a registry host.
type Registry struct {
	Server   string `json:"server"`
	Username string `json:"username,omitempty"`
	// Password is only ever sent, never kept in a revision or shown.
	Password string `json:"password,omitempty"`
	// PasswordSecretRef names an app secret holding the password.
	PasswordSecretRef string `json:"passwordSecretRef,omitempty"`
}

// HasImage reports whether the revision runs an image.
func (c *Config) HasImage() bool { return c.Source != nil && c.Source.Image != "" }

// Volume is a persistent per-app directory mounted at Path.
type Volume struct {
	Name string `json:"name"`
	Path string `json:"path"`
}

// Probe checks that a replica is ready: "tcp" (the port accepts), "http"
// (GET Path answers below 500), or "none".
type Probe struct {
	Type string `json:"type"`
	Path string `json:"path,omitempty"`
}

var (
	nameRE   = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}[a-z0-9]$`) })
	suffixRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,19}$`) })
	envRE    = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`) })
)

// ConfigError is an invalid setting.
type ConfigError struct {
	Message  string
	NotFound bool // the thing named does not exist (404)
}

func (e *ConfigError) Error() string { return e.Message }

func invalid(format string, a ...any) error { return &ConfigError{Message: fmt.Sprintf(format, a...)} }

// ValidName checks an app name: it is a DNS label (it becomes a host name)
// without "---", which separates labels.
func ValidName(name string) error {
	if !nameRE().MatchString(name) || strings.Contains(name, "--") {
		return invalid("%q is not a valid app name: use 2-32 lowercase letters, digits and single dashes, starting with a letter", name)
	}
	return nil
}

// Normalize fills defaults and validates.
func (c *Config) Normalize() error {
	if strings.TrimSpace(c.Command) == "" && !c.HasImage() {
		return invalid("--command is required: the command that starts the MCP server")
	}
	if c.HasImage() && c.Command != "" {
		return invalid("an app from an image takes its command as an argv (entrypoint, args; the CLI's --command and --args), not as a shell command")
	}
	if !c.HasImage() && (len(c.Entrypoint) > 0 || len(c.Args) > 0) {
		return invalid("entrypoint and args are for apps from an image (--image); give --command")
	}
	for _, r := range c.Registries {
		if r.Server == "" || strings.ContainsAny(r.Server, "/@ \t") {
			return invalid("registry server: host or host:port, as in image references, got %q", r.Server)
		}
		if r.PasswordSecretRef != "" {
			if err := ValidSecretName(r.PasswordSecretRef); err != nil {
				return invalid("registry %s: passwordSecretRef: %s", r.Server, err)
			}
		}
	}
	if c.Dir != "" {
		return invalid("the server does not copy a directory of its own host (dir %q): deploy with the CLI, whose --dir uploads the directory (berth app deploy NAME --dir DIR)", c.Dir)
	}
	if c.Source != nil {
		if c.Source.Archive == "" && c.Source.Image == "" {
			c.Source = nil
		} else if c.Source.Archive != "" {
			if err := source.ValidDigest(c.Source.Archive); err != nil {
				return invalid("source.archive: %v", err)
			}
		}
	}
	if c.Transport == "" {
		c.Transport = TransportHTTP
	}
	if c.Transport != TransportHTTP && c.Transport != TransportStdio {
		return invalid("transport must be http or stdio, not %q", c.Transport)
	}
	if c.Port == 0 {
		c.Port = 8080
	}
	if c.Port < 1 || c.Port > 65535 {
		return invalid("port must be 1-65535, not %d", c.Port)
	}
	if c.Path == "" {
		c.Path = "/mcp"
	}
	if !strings.HasPrefix(c.Path, "/") {
		return invalid("path must start with /, not %q", c.Path)
	}
	for k := range c.Env {
		if !envRE().MatchString(k) {
			return invalid("%q is not a valid environment variable name", k)
		}
	}
	if err := c.normalizeSecrets(); err != nil {
		return err
	}
	seen := map[string]bool{c.SecretVolume: c.SecretVolume != ""}
	for _, v := range c.Volumes {
		if !nameRE().MatchString(v.Name) {
			return invalid("%q is not a valid volume name", v.Name)
		}
		if !usableMountPath(v.Path) {
			return invalid("volume %s: %q is not a usable mount path", v.Name, v.Path)
		}
		if seen[v.Path] {
			return invalid("two volumes at %s", v.Path)
		}
		seen[v.Path] = true
	}
	if c.Max == 0 {
		c.Max = 10
	}
	if c.Min < 0 || c.Max < 1 || c.Min > c.Max || c.Max > 100 {
		return invalid("replicas: need 0 <= min <= max <= 100, got min %d, max %d", c.Min, c.Max)
	}
	if c.Concurrency == 0 {
		c.Concurrency = 10
	}
	if c.Concurrency < 1 {
		return invalid("concurrency must be at least 1")
	}
	if c.ScaleDownAfterSeconds == 0 {
		c.ScaleDownAfterSeconds = 300
	}
	if c.ScaleDownAfterSeconds < 1 {
		return invalid("scale-down-after must be at least 1s")
	}
	if c.MemoryBytes == 0 {
		c.MemoryBytes = 512 << 20
	}
	if c.DiskBytes == 0 {
		c.DiskBytes = 1 << 30
	}
	if c.DiskBytes < 16<<20 || c.DiskBytes > 1<<40 {
		return invalid("disk must be between 16Mi and 1024Gi, not %d bytes", c.DiskBytes)
	}
	if c.CPU == 0 {
		c.CPU = 1
	}
	egr, inject, _, err := egress.Setting(c.Egress, c.EgressInject)
	if err != nil {
		return invalid("%s", err)
	}
	c.Egress, c.EgressInject = egr, inject
	if c.RevisionSuffix != "" && !suffixRE().MatchString(c.RevisionSuffix) {
		return invalid("%q is not a valid revision suffix (lowercase letters, digits, dashes)", c.RevisionSuffix)
	}
	if c.Ingress != "" && c.Ingress != IngressExternal && c.Ingress != IngressInternal {
		return invalid("ingress must be external or internal, not %q", c.Ingress)
	}
	if err := c.CORS.Normalize(); err != nil {
		return invalid("%s", err.Error())
	}
	if c.Probe.Type == "" {
		c.Probe.Type = "tcp"
		if c.Transport == TransportStdio {
			c.Probe.Type = "none"
		}
	}
	switch c.Probe.Type {
	case "tcp", "none":
	case "http":
		if !strings.HasPrefix(c.Probe.Path, "/") {
			return invalid("an http probe needs a path starting with /")
		}
	default:
		return invalid("probe must be tcp, http:/PATH or none")
	}
	return nil
}

// normalizeSecrets checks the secret references.
func (c *Config) normalizeSecrets() error {
	for k, s := range c.SecretEnv {
		if !envRE().MatchString(k) {
			return invalid("%q is not a valid environment variable name", k)
		}
		if _, ok := c.Env[k]; ok {
			return invalid("environment variable %s is set both to a value and to a secret", k)
		}
		if err := ValidSecretName(s); err != nil {
			return err
		}
	}
	if p := c.SecretVolume; p != "" && !usableMountPath(p) {
		return invalid("secret volume: %q is not a usable mount path", p)
	}
	return nil
}

// usableMountPath reports whether a volume may be mounted at p.
func usableMountPath(p string) bool {
	return strings.HasPrefix(p, "/") && p != "/" && !strings.Contains(p, "..") &&
		p != "/app" && !strings.HasPrefix(p, "/proc") && !strings.HasPrefix(p, "/usr") && !strings.HasPrefix(p, "/.berth")
}

// ScaleDownAfter is how long a replica stays idle before it may go.
func (c Config) ScaleDownAfter() time.Duration {
	return time.Duration(c.ScaleDownAfterSeconds) * time.Second
}

// Revision is an immutable deploy of an app.
type Revision struct {
	Name      string    `json:"name"`
	Config    Config    `json:"config"`
	CreatedAt time.Time `json:"createdAt"`
}

// TrafficTarget gives a revision a share of new sessions.
type TrafficTarget struct {
	Revision string `json:"revision"`
	Percent  int    `json:"percent"`
}

// Doc is everything stored about an app.
type Doc struct {
	Name      string            `json:"name"`
	Revisions []Revision        `json:"revisions"`
	Traffic   []TrafficTarget   `json:"traffic"`
	Labels    map[string]string `json:"labels,omitempty"`
	// CORS is the app's CORS policy: its latest deploy's.
	CORS *cors.Spec `json:"corsPolicy,omitempty"`
	// Hostnames are the app's custom domains.
	Hostnames []Hostname `json:"hostnames,omitempty"`
	// Latest sends all traffic to the newest revision on each deploy; an
	// explicit traffic split turns it off until the next --set of 100% to
	// the latest.
	Latest    bool      `json:"latestRevision"`
	Next      int       `json:"nextRevision"`
	CreatedAt time.Time `json:"createdAt"`
	// Auth is how callers authenticate (nil: none), for every revision.
	Auth *Auth `json:"auth,omitempty"`
	// Ingress is external ("": the default) or internal (reachable only
	// from other apps and sessions).
	Ingress string `json:"ingress,omitempty"`
	// APIKeys are the app's keys (hashed), used when Auth.Mode is apikey.
	APIKeys []APIKey `json:"apiKeys,omitempty"`
}

func (d *Doc) revision(name string) *Revision {
	for i := range d.Revisions {
		if d.Revisions[i].Name == name {
			return &d.Revisions[i]
		}
	}
	return nil
}

// active lists the revisions that must run: those with traffic or a label.
func (d *Doc) active() []string {
	set := map[string]bool{}
	for _, t := range d.Traffic {
		if t.Percent > 0 {
			set[t.Revision] = true
		}
	}
	for _, r := range d.Labels {
		set[r] = true
	}
	out := make([]string, 0, len(set))
	for r := range set {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// validateTraffic checks a split: known revisions, 0-100 each, 100 in all.
func (d *Doc) validateTraffic(t []TrafficTarget) error {
	sum := 0
	for _, x := range t {
		if d.revision(x.Revision) == nil {
			return invalid("revision %q does not exist (see berth app revisions %s)", x.Revision, d.Name)
		}
		if x.Percent < 0 || x.Percent > 100 {
			return invalid("traffic for %s must be 0-100%%", x.Revision)
		}
		sum += x.Percent
	}
	if sum != 100 {
		return invalid("traffic must add up to 100%%, not %d%%", sum)
	}
	return nil
}
