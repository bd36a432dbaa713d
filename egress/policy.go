// Package egress enforces egress rules finer than on/off for pools and
// apps: an allow-list of host names (and explicit addresses), and headers
// the host adds to a sandbox's HTTPS requests from secrets the sandbox never
// sees. A sandbox with rules gets no route out; everything it sends goes to
// a proxy on the host side of its veth, which checks the name the sandbox
// asked for (CONNECT host, Host header, TLS SNI), resolves it itself and
// refuses addresses that are the host's own, loopback, link-local,
// metadata or private unless a rule names them.
package egress

import (
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Policy is a sandbox's egress rules. The zero value allows nothing.
type Policy struct {
	// Allow lists host names (api.github.com, *.pypi.org: any subdomain
	// at any depth, not pypi.org itself), optionally with a port
	// (host:8443; default 80 and 443), and addresses or prefixes
	// (10.0.0.5, 10.1.0.0/16) that may be reached although they are
	// private, by literal or by a name's resolution.
	Allow []string `json:"allow,omitempty"`
	// Inject adds headers to HTTPS requests to a host.
	Inject []Inject `json:"inject,omitempty"`
}

// Inject adds Header, with the value of secret Secret, to every HTTPS
// request to Host.
type Inject struct {
	Host   string `json:"host"`
	Header string `json:"header"`
	Secret string `json:"secret"`
}

// String is the rule as written on the command line.
func (i Inject) String() string { return i.Host + ":" + i.Header + "=secretref:" + i.Secret }

// ParseAllow reads "allow=a.example,*.b.example" (or the list alone).
func ParseAllow(s string) ([]string, error) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "allow=")
	var out []string
	for _, r := range strings.Split(s, ",") {
		r = strings.ToLower(strings.TrimSpace(r))
		if r == "" {
			continue
		}
		if err := checkRule(r); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("egress allow-list is empty: give host names, e.g. allow=api.github.com,*.pypi.org")
	}
	return out, nil
}

func checkRule(r string) error {
	if _, err := netip.ParsePrefix(r); err == nil {
		return nil
	}
	if _, err := netip.ParseAddr(r); err == nil {
		return nil
	}
	host, port := r, ""
	if i := strings.LastIndexByte(r, ':'); i >= 0 {
		host, port = r[:i], r[i+1:]
		if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
			return fmt.Errorf("egress rule %q: bad port %q", r, port)
		}
	}
	name := strings.TrimPrefix(host, "*.")
	if !validName(name) || strings.Contains(name, "*") {
		return fmt.Errorf("egress rule %q: not a host name, *.domain, address or prefix", r)
	}
	return nil
}

func validName(s string) bool {
	if s == "" || len(s) > 253 || !strings.Contains(s, ".") && s != "localhost" {
		return s != "" && len(s) <= 63 && validLabel(s)
	}
	for _, l := range strings.Split(s, ".") {
		if !validLabel(l) {
			return false
		}
	}
	return true
}

func validLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for _, c := range l {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// ParseInject reads "api.github.com:Authorization=secretref:GH".
func ParseInject(s string) (Inject, error) {
	bad := func(why string) (Inject, error) {
		return Inject{}, fmt.Errorf("egress inject rule %q: %s (want HOST:Header=secretref:NAME)", s, why)
	}
	host, rest, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return bad("no header")
	}
	header, ref, ok := strings.Cut(rest, "=")
	if !ok {
		return bad("no value")
	}
	name, ok := strings.CutPrefix(ref, "secretref:")
	if !ok || name == "" {
		return bad("the value must be secretref:NAME (a secret, never a literal)")
	}
	host = strings.ToLower(host)
	if !validName(host) {
		return bad("not a host name")
	}
	if header == "" || http.CanonicalHeaderKey(header) == "" || strings.ContainsAny(header, " \t\r\n:") {
		return bad("bad header name")
	}
	return Inject{Host: host, Header: http.CanonicalHeaderKey(header), Secret: name}, nil
}

// Validate checks a stored or submitted policy.
func (p Policy) Validate() error {
	for _, r := range p.Allow {
		if err := checkRule(r); err != nil {
			return err
		}
	}
	for _, in := range p.Inject {
		if _, err := ParseInject(in.String()); err != nil {
			return err
		}
		if !p.allowsName(in.Host, 443) {
			return fmt.Errorf("egress inject rule %s: %s is not in the allow-list", in, in.Host)
		}
	}
	return nil
}

// allowsName reports whether a name may be reached on port.
func (p Policy) allowsName(host string, port int) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, r := range p.Allow {
		if _, err := netip.ParsePrefix(r); err == nil {
			continue
		}
		pat, rport := r, ""
		if i := strings.LastIndexByte(r, ':'); i >= 0 {
			pat, rport = r[:i], r[i+1:]
		}
		if rport == "" && port != 80 && port != 443 || rport != "" && rport != strconv.Itoa(port) {
			continue
		}
		if suffix, ok := strings.CutPrefix(pat, "*"); ok {
			if strings.HasSuffix(host, suffix) && len(host) > len(suffix) {
				return true
			}
		} else if host == pat {
			return true
		}
	}
	return false
}

// allowsAddr reports whether a rule names addr explicitly.
func (p Policy) allowsAddr(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, r := range p.Allow {
		if pf, err := netip.ParsePrefix(r); err == nil && pf.Contains(addr) {
			return true
		}
		if a, err := netip.ParseAddr(r); err == nil && a.Unmap() == addr {
			return true
		}
	}
	return false
}

// injections returns the headers to add for host.
func (p Policy) injections(host string) []Inject {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	var out []Inject
	for _, in := range p.Inject {
		if in.Host == host {
			out = append(out, in)
		}
	}
	return out
}

// Equal reports whether two policies are the same rules.
func (p Policy) Equal(q Policy) bool {
	return slices.Equal(p.Allow, q.Allow) && slices.Equal(p.Inject, q.Inject)
}

// Setting reads a pool's or app's egress setting: "disabled", "enabled", or
// "allow=LIST" with inject rules (HOST:Header=secretref:NAME, allowed only
// with an allow-list). It returns the setting and rules in their canonical
// form, and the policy (nil unless an allow-list).
func Setting(egress string, inject []string) (string, []string, *Policy, error) {
	egress = strings.TrimSpace(egress)
	switch egress {
	case "", "disabled", "enabled":
		if egress == "" {
			egress = "disabled"
		}
		if len(inject) > 0 {
			return "", nil, nil, fmt.Errorf("egress inject rules need an allow-list (--egress allow=HOST,…) naming their hosts, not egress %s", egress)
		}
		return egress, nil, nil, nil
	}
	if !strings.HasPrefix(egress, "allow=") {
		return "", nil, nil, fmt.Errorf("egress must be disabled, enabled or allow=HOST[,HOST…], not %q", egress)
	}
	allow, err := ParseAllow(egress)
	if err != nil {
		return "", nil, nil, err
	}
	p := &Policy{Allow: allow}
	var rules []string
	for _, s := range inject {
		in, err := ParseInject(s)
		if err != nil {
			return "", nil, nil, err
		}
		p.Inject = append(p.Inject, in)
		rules = append(rules, in.String())
	}
	if err := p.Validate(); err != nil {
		return "", nil, nil, err
	}
	return "allow=" + strings.Join(allow, ","), rules, p, nil
}
