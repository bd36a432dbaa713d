package pool

// MCPEndpoint says whether the pool's MCP endpoint is on and whether it
// needs the pool's key (mcpAuth other than none); the front door asks.
func (p *Pool) MCPEndpoint() (enabled, keyed bool) {
	c := p.cfg.Load()
	return c.MCP, c.MCPAuth != MCPAuthNone
}
