package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// Hostname is a custom domain bound to an app (or one of its labels):
// requests whose Host is Host reach it.
type Hostname struct {
	Host  string `json:"host"`
	Label string `json:"label,omitempty"`
}

// ErrHostTaken is the error for a host bound to another app already.
var ErrHostTaken = errors.New("host name is bound to another app")

var hostLabelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidHostname checks a custom domain: a lowercase DNS name of two labels
// or more, without port, that is no IP address and not under appDomain
// (whose names are the apps' own).
func ValidHostname(host, appDomain string) error {
	switch {
	case host == "":
		return invalid("a host name is required")
	case net.ParseIP(strings.Trim(host, "[]")) != nil:
		return invalid("%q is an IP address, not a host name", host)
	case strings.Contains(host, ":"):
		return invalid("%q: give the host name without a port", host)
	case host != strings.ToLower(host):
		return invalid("%q: host names are lowercase", host)
	case len(host) > 253:
		return invalid("%q: a host name is at most 253 characters", host)
	}
	labels := strings.Split(host, ".")
	if len(labels) < 2 {
		return invalid("%q is not a fully qualified host name (example: mcp.example.com)", host)
	}
	for _, l := range labels {
		if !hostLabelRE.MatchString(l) {
			return invalid("%q is not a valid DNS name", host)
		}
	}
	d := strings.ToLower(strings.Trim(appDomain, "."))
	if d != "" && (host == d || strings.HasSuffix(host, "."+d)) {
		return invalid("%q is under the app domain %s, whose names are the apps' own", host, d)
	}
	return nil
}

// hostIndex finds the app of a custom domain in O(1).
type hostIndex struct {
	mu sync.RWMutex
	m  map[string]hostTarget
}

type hostTarget struct{ app, label string }

func (x *hostIndex) add(app string, hs []Hostname) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.m == nil {
		x.m = map[string]hostTarget{}
	}
	for _, h := range hs {
		x.m[h.Host] = hostTarget{app, h.Label}
	}
}

// remove drops the hosts that are app's.
func (x *hostIndex) remove(app string, hosts ...string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, h := range hosts {
		if t, ok := x.m[h]; ok && t.app == app {
			delete(x.m, h)
		}
	}
}

// reserve claims host for app, or says which app holds it.
func (x *hostIndex) reserve(app, host, label string) (owner string, ok bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if t, found := x.m[host]; found && t.app != app {
		return t.app, false
	}
	if x.m == nil {
		x.m = map[string]hostTarget{}
	}
	x.m[host] = hostTarget{app, label}
	return app, true
}

// Host finds the app (and label) a custom domain is bound to; host is
// lowercase, without port.
func (m *Manager) Host(host string) (name, label string, ok bool) {
	m.hosts.mu.RLock()
	t, ok := m.hosts.m[host]
	m.hosts.mu.RUnlock()
	return t.app, t.label, ok
}

// AddHostname binds a custom domain to an app (or its label). The host
// must be valid (see ValidHostname; the caller checks the app domain) and
// bound to no other app: ErrHostTaken otherwise. Adding a host the app has
// already moves it to label.
func (m *Manager) AddHostname(ctx context.Context, name, host, label string) (Doc, error) {
	a, err := m.Get(name)
	if err != nil {
		return Doc{}, err
	}
	if err := ValidHostname(host, ""); err != nil {
		return Doc{}, err
	}
	if owner, ok := m.hosts.reserve(name, host, label); !ok {
		return Doc{}, fmt.Errorf("%w: %s is bound to app %s (delete it there first: berth app hostname delete %s %s)", ErrHostTaken, host, owner, owner, host)
	}
	doc, err := a.update(ctx, func(d *Doc) error {
		if label != "" && d.Labels[label] == "" {
			return fmt.Errorf("%w: %q (add it with berth app traffic %s --label REV=%s)", ErrLabelNotFound, label, name, label)
		}
		d.Hostnames = slices.DeleteFunc(slices.Clone(d.Hostnames), func(h Hostname) bool { return h.Host == host })
		d.Hostnames = append(d.Hostnames, Hostname{Host: host, Label: label})
		return nil
	})
	if err != nil {
		// Give the host back unless the app had it before.
		if !slices.ContainsFunc(a.Doc().Hostnames, func(h Hostname) bool { return h.Host == host }) {
			m.hosts.remove(name, host)
		} else {
			m.hosts.add(name, a.Doc().Hostnames)
		}
		return Doc{}, err
	}
	return doc, nil
}

// DeleteHostname unbinds a custom domain from an app; ErrNotFound if the
// app does not have it.
func (m *Manager) DeleteHostname(ctx context.Context, name, host string) (Doc, error) {
	a, err := m.Get(name)
	if err != nil {
		return Doc{}, err
	}
	doc, err := a.update(ctx, func(d *Doc) error {
		n := len(d.Hostnames)
		d.Hostnames = slices.DeleteFunc(slices.Clone(d.Hostnames), func(h Hostname) bool { return h.Host == host })
		if len(d.Hostnames) == n {
			return fmt.Errorf("%w: app %s has no host name %q", ErrHostNotFound, name, host)
		}
		return nil
	})
	if err != nil {
		return Doc{}, err
	}
	m.hosts.remove(name, host)
	return doc, nil
}

// ErrHostNotFound is the error for a host an app does not have.
var ErrHostNotFound = errors.New("host name not found")
