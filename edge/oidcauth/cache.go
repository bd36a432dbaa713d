package oidcauth

import (
	"crypto/sha256"
	"sync"
	"time"
)

// tokenCache remembers tokens that verified, keyed by their SHA-256, so
// that a client sending the same token on every request (what MCP clients
// do) pays for the signature once: a hit costs a hash and a map lookup.
// An entry lives until the token expires or for the cache TTL, whichever
// comes first; the TTL bounds how long a token stays accepted after its
// key is withdrawn from the JWKS.
type tokenCache struct {
	ttl time.Duration
	max int

	mu      sync.RWMutex
	entries map[[sha256.Size]byte]cacheEntry
}

type cacheEntry struct {
	p     *Principal
	until time.Time
}

func newTokenCache(ttl time.Duration, max int) *tokenCache {
	if ttl <= 0 || max <= 0 {
		return nil
	}
	return &tokenCache{ttl: ttl, max: max, entries: make(map[[sha256.Size]byte]cacheEntry)}
}

func (c *tokenCache) get(raw string, now time.Time) (*Principal, bool) {
	if c == nil {
		return nil, false
	}
	k := sha256.Sum256([]byte(raw))
	c.mu.RLock()
	e, ok := c.entries[k]
	c.mu.RUnlock()
	if !ok || !now.Before(e.until) {
		return nil, false
	}
	return e.p, true
}

func (c *tokenCache) put(raw string, p *Principal, now time.Time) {
	if c == nil {
		return
	}
	until := now.Add(c.ttl)
	if p.Expiry.Before(until) {
		until = p.Expiry
	}
	k := sha256.Sum256([]byte(raw))
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		for k, e := range c.entries {
			if !now.Before(e.until) {
				delete(c.entries, k)
			}
		}
		for k := range c.entries { // still full: drop arbitrary entries
			if len(c.entries) < c.max {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[k] = cacheEntry{p: p, until: until}
}
