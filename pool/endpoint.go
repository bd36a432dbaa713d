package pool

import (
	"log/slog"

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

// compileCORS compiles a validated policy; one that fails (a stored
// policy a newer version no longer accepts) allows no origin.
func compileCORS(s *cors.Spec, log *slog.Logger) *cors.Policy {
	if s == nil {
		return nil
	}
	pol, err := cors.Compile(*s)
	if err != nil {
		log.Warn("CORS policy refused: no browser origin is allowed", "error", err)
		pol, _ = cors.Compile(cors.Spec{AllowedOrigins: []string{"https://invalid.invalid"}})
	}
	return pol
}
