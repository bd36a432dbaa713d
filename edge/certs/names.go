package certs

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"golang.org/x/net/idna"
)

// normalizeName lowercases a host name, drops a trailing dot, turns an
// internationalized name into its ASCII form and checks that it can be the
// subject of a certificate. IP addresses are returned in canonical form.
func normalizeName(name string) (string, error) {
	n := strings.TrimSuffix(strings.TrimSpace(name), ".")
	if ip, err := netip.ParseAddr(strings.Trim(n, "[]")); err == nil {
		if ip.Zone() != "" {
			return "", fmt.Errorf("certs: %q: an address with a zone cannot be in a certificate", name)
		}
		return ip.Unmap().String(), nil
	}
	wild := strings.HasPrefix(n, "*.")
	if wild {
		n = n[2:]
	}
	a, err := idna.Lookup.ToASCII(n)
	if err != nil || a == "" {
		return "", fmt.Errorf("certs: %q is not a valid host name", name)
	}
	if wild {
		a = "*." + a
	}
	if !certmagic.SubjectQualifiesForCert(a) {
		return "", fmt.Errorf("certs: %q is not a valid host name", name)
	}
	return a, nil
}

// nameSet is the set of bound names (exact names and *.wildcards).
type nameSet struct {
	mu    sync.RWMutex
	names map[string]struct{}
}

// add binds names and returns those that were not bound before.
func (s *nameSet) add(names []string) (added []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.names == nil {
		s.names = make(map[string]struct{})
	}
	for _, n := range names {
		if _, ok := s.names[n]; !ok {
			s.names[n] = struct{}{}
			added = append(added, n)
		}
	}
	return added
}

func (s *nameSet) remove(names []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range names {
		delete(s.names, n)
	}
}

// has reports whether name is bound, exactly or through a wildcard one
// label up ("a.example.com" under "*.example.com").
func (s *nameSet) has(name string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if _, ok := s.names[name]; ok {
		return true
	}
	if i := strings.IndexByte(name, '.'); i > 0 && net.ParseIP(name) == nil {
		_, ok := s.names["*"+name[i:]]
		return ok
	}
	return false
}

func (s *nameSet) list() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.names))
	for n := range s.names {
		out = append(out, n)
	}
	return out
}

// Status says, cheaply (from the cache), where a name's certificate
// stands: "not bound", "pending" (bound, none obtained yet) or "valid
// until TIME" (the latest in the cache, issuer's name included).
func (m *Manager) Status(name string) string {
	n, err := normalizeName(name)
	if err != nil || !m.bound.has(n) {
		return "not bound"
	}
	var best *x509.Certificate
	for _, c := range m.cache.AllMatchingCertificates(n) {
		if c.Leaf != nil && (best == nil || c.Leaf.NotAfter.After(best.NotAfter)) {
			best = c.Leaf
		}
	}
	if best == nil {
		return "pending"
	}
	return fmt.Sprintf("valid until %s (issuer %s)", best.NotAfter.UTC().Format(time.RFC3339), best.Issuer.CommonName)
}
