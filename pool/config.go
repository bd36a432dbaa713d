package pool

import (
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/edge/cors"
	"github.com/berth-dev/berth/egress"
	"github.com/berth-dev/berth/sandbox"
)

// Types of pool.
const (
	TypeShell  = "shell"
	TypePython = "python"
	// TypeCustom pools run an image's own server, one container per
	// session identifier, and proxy HTTP requests to it (Azure's custom
	// container sessions).
	TypeCustom = "custom"
)

// MCP authentication modes.
const (
	MCPAuthKey  = "key"
	MCPAuthNone = "none"
)

// Config is a pool's settings, as stored and as shown by the API.
type Config struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	Runtime string `json:"runtime"`
	// Ready is how many sandboxes are kept warm.
	Ready int `json:"readySessions"`
	// Max bounds live sessions.
	Max int `json:"maxSessions"`
	// CooldownSeconds is how long a session may be idle before it is
	// destroyed.
	CooldownSeconds int    `json:"cooldownSeconds"`
	Egress          string `json:"egress"` // "disabled", "enabled" or "allow=HOST,…"
	// EgressInject are headers the egress proxy adds to HTTPS requests
	// (HOST:Header=secretref:NAME), with an allow-list only.
	EgressInject []string `json:"egressInject,omitempty"`
	MemoryBytes  int64    `json:"memoryBytes"`
	// DiskBytes bounds each session's writable space on disk (its
	// workspace and /tmp), in bytes and in files (one per 16 KiB).
	DiskBytes int64   `json:"diskBytes"`
	CPU       float64 `json:"cpu"`
	// TimeoutSeconds bounds each execution.
	TimeoutSeconds int `json:"timeoutSeconds"`
	// MCP enables the pool's MCP endpoint; MCPAuth is "key" or "none".
	MCP     bool   `json:"mcp"`
	MCPAuth string `json:"mcpAuth"`
	// CORS is the pool's CORS policy for its MCP endpoint (nil: berth up
	// --allow-origin applies).
	CORS *cors.Spec `json:"corsPolicy,omitempty"`
	// Auth is what the data plane and the MCP endpoint accept: "key" (the
	// pool's key, the default), "oidc" (bearer tokens from OIDC) or
	// "key,oidc" (either).
	Auth string `json:"auth,omitempty"`
	// OIDC says whose tokens are accepted when Auth has oidc.
	OIDC *OIDC `json:"oidc,omitempty"`

	// Image, if set, is the image the pool's sandboxes run on, as the
	// user named it (a tag, or a digest); ImageDigest is the manifest
	// digest it resolved to when the pool was created or its image last
	// updated: sandboxes run that digest, so a tag that moves later does
	// not change the pool under its users. Without Image, sandboxes run on
	// the host's /usr.
	Image       string `json:"image,omitempty"`
	ImageDigest string `json:"imageDigest,omitempty"`
	// Container is a custom pool's server: its port and, overriding the
	// image's, its command, args and environment.
	Container *Container `json:"container,omitempty"`
}

// Container is what a custom pool runs in each session's sandbox.
type Container struct {
	// TargetPort is the port the server listens on (inside the sandbox);
	// requests to /pools/NAME/PATH?identifier=ID reach it at PATH.
	TargetPort int `json:"targetPort"`
	// Command replaces the image's Entrypoint (and drops its Cmd); Args
	// replace its Cmd.
	Command []string          `json:"command,omitempty"`
	Args    []string          `json:"args,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
}

// Pool authentication (Config.Auth).
const (
	AuthKey     = "key"
	AuthOIDC    = "oidc"
	AuthKeyOIDC = "key,oidc"
)

// OIDC is the issuer and audience of the tokens a pool accepts.
type OIDC struct {
	Issuer         string   `json:"issuer"`
	Audience       string   `json:"audience"`
	Scopes         []string `json:"scopes,omitempty"`
	AllowedClients []string `json:"allowedClients,omitempty"`
}

// Defaults for fields left zero.
const (
	DefaultReady    = 2
	DefaultMax      = 100
	DefaultCooldown = 300
	DefaultMemory   = 512 << 20
	DefaultDisk     = 1 << 30
	MinDisk         = 16 << 20
	MaxDisk         = 1 << 40
	DefaultCPU      = 1.0
	DefaultTimeout  = 220
	// MaxMax bounds --max, so that one pool cannot ask for more sandboxes
	// than a host could hold.
	MaxMax = 10000
)

var nameRE = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^[a-z][a-z0-9-]{0,38}[a-z0-9]$|^[a-z]$`)
})

// Normalize fills defaults and validates; the error says which setting is
// wrong and what is allowed.
func (c *Config) Normalize() error {
	if !nameRE().MatchString(c.Name) {
		return invalid("name", "%q is not a valid pool name: use 1-40 lowercase letters, digits and dashes, starting with a letter", c.Name)
	}
	if c.Type == "" {
		c.Type = TypeShell
	}
	if c.Type != TypeShell && c.Type != TypePython && c.Type != TypeCustom {
		return invalid("type", "type must be %q, %q or %q, not %q", TypeShell, TypePython, TypeCustom, c.Type)
	}
	if err := c.normalizeImage(); err != nil {
		return err
	}
	if c.Runtime == "" {
		c.Runtime = "bwrap"
	}
	if c.Max == 0 {
		c.Max = DefaultMax
	}
	if c.Max < 1 || c.Max > MaxMax {
		return invalid("maxSessions", "maxSessions must be between 1 and %d, not %d", MaxMax, c.Max)
	}
	if c.Ready < 0 || c.Ready > c.Max {
		return invalid("readySessions", "readySessions must be between 0 and maxSessions (%d), not %d", c.Max, c.Ready)
	}
	if c.CooldownSeconds == 0 {
		c.CooldownSeconds = DefaultCooldown
	}
	if c.CooldownSeconds < 1 || c.CooldownSeconds > 7*24*3600 {
		return invalid("cooldownSeconds", "cooldown must be between 1s and 7 days, not %ds", c.CooldownSeconds)
	}
	egr, inject, _, err := egress.Setting(c.Egress, c.EgressInject)
	if err != nil {
		return invalid("egress", "%s", err)
	}
	c.Egress, c.EgressInject = egr, inject
	if c.MemoryBytes == 0 {
		c.MemoryBytes = DefaultMemory
	}
	if c.MemoryBytes < 32<<20 || c.MemoryBytes > 64<<30 {
		return invalid("memoryBytes", "memory must be between 32Mi and 64Gi, not %s", FormatBytes(c.MemoryBytes))
	}
	if c.DiskBytes == 0 {
		c.DiskBytes = DefaultDisk
	}
	if c.DiskBytes < MinDisk || c.DiskBytes > MaxDisk {
		return invalid("diskBytes", "disk must be between %s and %s, not %s", FormatBytes(MinDisk), FormatBytes(MaxDisk), FormatBytes(c.DiskBytes))
	}
	if c.CPU == 0 {
		c.CPU = DefaultCPU
	}
	if c.CPU < 0.05 || c.CPU > 64 {
		return invalid("cpu", "cpu must be between 0.05 and 64 cores, not %g", c.CPU)
	}
	if c.TimeoutSeconds == 0 {
		c.TimeoutSeconds = DefaultTimeout
	}
	if c.TimeoutSeconds < 1 || c.TimeoutSeconds > 3600 {
		return invalid("timeoutSeconds", "timeout must be between 1s and 3600s, not %ds", c.TimeoutSeconds)
	}
	if c.MCPAuth == "" {
		c.MCPAuth = MCPAuthKey
	}
	if c.MCPAuth != MCPAuthKey && c.MCPAuth != MCPAuthNone {
		return invalid("mcpAuth", "mcpAuth must be %q or %q, not %q", MCPAuthKey, MCPAuthNone, c.MCPAuth)
	}
	if err := c.CORS.Normalize(); err != nil {
		return invalid("corsPolicy", "%s", err.Error())
	}
	return c.normalizeAuth()
}

// normalizeImage checks the image and, for a custom pool, its container.
func (c *Config) normalizeImage() error {
	c.Image = strings.TrimSpace(c.Image)
	if c.Image == "" {
		c.ImageDigest = ""
	}
	if strings.ContainsAny(c.Image, " \t\n\x00") {
		return invalid("image", "image %q is not an image reference (e.g. registry.example:5000/python:3)", c.Image)
	}
	if c.Type != TypeCustom {
		if c.Container != nil {
			return invalid("container", "--target-port, --command, --args and --env are for custom pools (--type custom)")
		}
		return nil
	}
	if c.Image == "" {
		return invalid("image", "a custom pool needs --image: the container image each session runs")
	}
	if c.MCP {
		return invalid("mcp", "a custom pool has no MCP endpoint: its sessions serve their own HTTP API")
	}
	if c.Container == nil || c.Container.TargetPort < 1 || c.Container.TargetPort > 65535 {
		return invalid("targetPort", "a custom pool needs --target-port: the port (1-65535) its container listens on")
	}
	for k := range c.Container.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return invalid("env", "environment variable name %q is not valid", k)
		}
	}
	return nil
}
func (c *Config) normalizeAuth() error {
	switch c.Auth {
	case "":
		c.Auth = AuthKey
	case "oidc,key":
		c.Auth = AuthKeyOIDC
	case AuthKey, AuthOIDC, AuthKeyOIDC:
	default:
		return invalid("auth", "auth must be key, oidc or key,oidc, not %q", c.Auth)
	}
	if c.Auth == AuthKey {
		return nil
	}
	if c.OIDC == nil {
		return invalid("auth", "auth %s needs --oidc-issuer and --oidc-audience", c.Auth)
	}
	u, err := url.Parse(c.OIDC.Issuer)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return invalid("oidc", "--oidc-issuer must be an http(s) URL (exactly the tokens' iss), not %q", c.OIDC.Issuer)
	}
	if h := u.Hostname(); u.Scheme == "http" && h != "localhost" && !strings.HasPrefix(h, "127.") && h != "::1" {
		return invalid("oidc", "--oidc-issuer must be https (http only on loopback): %q", c.OIDC.Issuer)
	}
	if strings.TrimSpace(c.OIDC.Audience) == "" {
		return invalid("oidc", "auth %s needs --oidc-audience: the value the tokens' aud must hold", c.Auth)
	}
	return nil
}

// shape is what a sandbox is made with: every setting that is baked into a
// sandbox when it starts. A warm sandbox is only handed out while its shape
// is the pool's, so an update that changes one of these (egress, memory,
// cpu, …) replaces the warm sandboxes at once; live sessions keep theirs.
// Settings read at each request (timeout, cooldown, max, MCP) are not part
// of it. A new sandbox setting goes here, and startSandbox takes it from
// here.
type shape struct {
	Type   string
	Limits sandbox.Limits
	Egress bool
	// Image is the image's digest ("": the host's /usr).
	Image string
	// Container is a custom pool's container settings, encoded.
	Container string
	// EgressRules is the allow-list and inject rules, if any.
	EgressRules string
}

func (c Config) shape() shape {
	sh := shape{
		Type:   c.Type,
		Limits: sandbox.Limits{MemoryBytes: c.MemoryBytes, CPU: c.CPU, DiskBytes: c.DiskBytes},
		Egress: c.Egress != "disabled",
		Image:  c.ImageDigest,
	}
	if strings.HasPrefix(c.Egress, "allow=") {
		sh.EgressRules = c.Egress + "\n" + strings.Join(c.EgressInject, "\n")
	}
	if c.Container != nil {
		b, _ := json.Marshal(c.Container) // map keys sorted: a stable encoding
		sh.Container = string(b)
	}
	return sh
}

// Cooldown is the idle time after which a session is destroyed.
func (c Config) Cooldown() time.Duration { return time.Duration(c.CooldownSeconds) * time.Second }

// Timeout bounds each execution.
func (c Config) Timeout() time.Duration { return time.Duration(c.TimeoutSeconds) * time.Second }

// ParseBytes reads a quantity such as 512Mi, 1Gi, 300M or 1048576.
func ParseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"B", 1}}
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSuffix(t, u.suffix), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	// Written so that NaN fails too; past 2^62 (4 EiB) no size is real,
	// and converting a float beyond int64 gives a machine-dependent value.
	if v := f * float64(mult); err != nil || !(v >= 0 && v <= 1<<62) {
		return 0, fmt.Errorf("%q is not a size (examples: 512Mi, 2Gi)", s)
	}
	return int64(f * float64(mult)), nil
}

// FormatBytes renders a size the way ParseBytes reads it.
func FormatBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "Gi"
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "Mi"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "Ki"
	}
	return strconv.FormatInt(n, 10)
}
