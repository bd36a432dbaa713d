package pool

import (
	"github.com/berth-dev/berth/edge/cors"
)

// MCPEndpoint says whether the pool's MCP endpoint is on and whether it
// needs the pool's key (mcpAuth other than none); the front door asks.
func (p *Pool) MCPEndpoint() (enabled, keyed bool) {
	c := p.cfg.Load()
	return c.MCP, c.MCPAuth != MCPAuthNone
}

// Credentials says what the pool accepts: its key, and bearer tokens
// from oidc (nil: none).
func (p *Pool) Credentials() (key bool, oidc *OIDC) {
	c := p.cfg.Load()
	if c.Auth == AuthOIDC || c.Auth == AuthKeyOIDC {
		oidc = c.OIDC
	}
	return c.Auth != AuthOIDC, oidc
}

// CORS is the pool's compiled CORS policy (nil if it has none); the front
// door asks on every request to the MCP endpoint.
func (p *Pool) CORS() *cors.Policy { return p.cors.Load() }

// Custom reports whether the pool is a custom container pool: every path
// under it is its sessions' (the front door asks).
func (p *Pool) Custom() bool { return p.cfg.Load().Type == TypeCustom }
