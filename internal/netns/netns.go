// Package netns gives sandboxes that may reach the network their own
// network namespace: a veth pair to the host, an address in 100.64.0.0/10
// (one /30 per sandbox), NAT to the outside, and nftables rules on the host
// side that drop everything a sandbox sends to the host itself or to
// private, loopback and link-local ranges. Filtering on the host side of the
// veth works for every runtime, gVisor included, whose packets bypass
// nftables inside the namespace.
package netns

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
)

// The ports of the host side of a proxied namespace's veth where its egress
// proxy listens: an explicit HTTP proxy, and the targets of the sandbox's
// ports 80, 443 and 53, redirected.
const (
	ProxyPort = 3128
	HTTPPort  = 3129
	TLSPort   = 3130
	DNSPort   = 3153
)

// Manager creates namespaces for one Berth instance.
type Manager struct {
	prefix string // four characters from the instance, in every name
	subnet netip.Prefix

	mu    sync.Mutex
	ready bool
}

// New returns a manager whose names and addresses derive from instance.
func New(instance string) *Manager {
	var h uint32
	for _, c := range instance {
		h = h*31 + uint32(c)
	}
	p := fmt.Sprintf("%04x", h&0xffff)
	subnet := netip.PrefixFrom(netip.AddrFrom4([4]byte{100, byte(64 + h%64), 0, 0}), 16)
	return &Manager{prefix: p, subnet: subnet}
}

// Namespace is one sandbox's network namespace.
type Namespace struct {
	Name    string // under /run/netns
	HostIf  string
	Address netip.Addr // the sandbox's address
	Gateway netip.Addr // the host side
	m       *Manager
	proxied bool
}

func (m *Manager) table() string    { return "berth_" + m.prefix }
func (m *Manager) ifPrefix() string { return "b" + m.prefix }

// setup installs the host-wide rules once.
func (m *Manager) setup(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ready {
		return nil
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return fmt.Errorf("egress needs nftables (apt-get install nftables): %w", err)
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0); err != nil {
		return fmt.Errorf("enable forwarding: %w", err)
	}
	ifs := m.ifPrefix() + "*"
	// The host's own resolvers may sit in a private range: allow DNS to
	// them (and nothing else) before private ranges are dropped.
	dns := ""
	if servers := resolvers("/etc/resolv.conf"); len(servers) > 0 {
		dns = fmt.Sprintf("iifname \"%s\" ip daddr { %s } meta l4proto { tcp, udp } th dport 53 accept", ifs, strings.Join(servers, ", "))
	}
	rules := fmt.Sprintf(`table inet %[1]s {
	set proxied {
		type ifname
	}
	set proxyaddr {
		type ifname . ipv4_addr
	}
	chain prerouting {
		type nat hook prerouting priority -110; policy accept;
		iifname @proxied tcp dport 80 redirect to :%[5]d
		iifname @proxied tcp dport 443 redirect to :%[6]d
		iifname @proxied udp dport 53 redirect to :%[7]d
	}
	chain input {
		type filter hook input priority -10; policy accept;
		iifname "%[2]s" ct state established,related accept
		iifname . ip daddr @proxyaddr tcp dport { %[8]d, %[5]d, %[6]d } accept
		iifname . ip daddr @proxyaddr udp dport %[7]d accept
		iifname "%[2]s" drop
	}
	chain forward {
		type filter hook forward priority -10; policy accept;
		oifname "%[2]s" ct state established,related accept
		oifname "%[2]s" drop
		iifname @proxied drop
		iifname "%[2]s" meta nfproto ipv6 drop
		%[4]s
		iifname "%[2]s" ip daddr { 0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, 172.16.0.0/12, 192.168.0.0/16, 224.0.0.0/3 } drop
		iifname "%[2]s" accept
	}
	chain postrouting {
		type nat hook postrouting priority 100; policy accept;
		ip saddr %[3]s oifname != "%[2]s" masquerade
	}
}
`, m.table(), ifs, m.subnet, dns, HTTPPort, TLSPort, DNSPort, ProxyPort)
	_ = run(ctx, "nft", "delete", "table", "inet", m.table())
	cmd := exec.CommandContext(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %v: %s", err, out)
	}
	m.ready = true
	return nil
}

// Create makes the namespace for slot. A proxied namespace has no route
// out: only the proxy ports on its gateway address, with its ports 80, 443
// and 53 redirected there.
func (m *Manager) Create(ctx context.Context, slot int, proxied bool) (*Namespace, error) {
	if err := m.setup(ctx); err != nil {
		return nil, err
	}
	if slot <= 0 || slot >= 1<<14 {
		return nil, fmt.Errorf("netns: slot %d out of range", slot)
	}
	base := m.subnet.Addr().As4()
	off := slot * 4
	gw := netip.AddrFrom4([4]byte{base[0], base[1], byte(off >> 8), byte(off&0xff) + 1})
	addr := gw.Next()
	n := &Namespace{
		Name:    fmt.Sprintf("berth-%s-%d", m.prefix, slot),
		HostIf:  fmt.Sprintf("%s%x", m.ifPrefix(), slot),
		Address: addr,
		Gateway: gw,
		m:       m,
	}
	peer := n.HostIf + "p"
	steps := [][]string{
		{"ip", "netns", "add", n.Name},
		{"ip", "link", "add", n.HostIf, "type", "veth", "peer", "name", peer},
		{"ip", "link", "set", peer, "netns", n.Name},
		{"ip", "addr", "add", gw.String() + "/30", "dev", n.HostIf},
		{"ip", "link", "set", n.HostIf, "up"},
		{"ip", "-n", n.Name, "link", "set", peer, "name", "eth0"},
		{"ip", "-n", n.Name, "addr", "add", addr.String() + "/30", "dev", "eth0"},
		{"ip", "-n", n.Name, "link", "set", "eth0", "up"},
		{"ip", "-n", n.Name, "link", "set", "lo", "up"},
		{"ip", "-n", n.Name, "route", "add", "default", "via", gw.String()},
	}
	if proxied {
		// Before the link is up, so that nothing passes unfiltered.
		steps = append([][]string{
			{"nft", "add", "element", "inet", m.table(), "proxied", "{ " + n.HostIf + " }"},
			{"nft", "add", "element", "inet", m.table(), "proxyaddr", "{ " + n.HostIf + " . " + gw.String() + " }"},
		}, steps...)
		n.proxied = true
	}
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			n.Close()
			return nil, err
		}
	}
	return n, nil
}

// Close removes the namespace and its veth pair.
func (n *Namespace) Close() error {
	ctx := context.Background()
	_ = run(ctx, "ip", "link", "del", n.HostIf)
	if n.proxied {
		_ = run(ctx, "nft", "delete", "element", "inet", n.m.table(), "proxied", "{ "+n.HostIf+" }")
		_ = run(ctx, "nft", "delete", "element", "inet", n.m.table(), "proxyaddr", "{ "+n.HostIf+" . "+n.Gateway.String()+" }")
	}
	if err := run(ctx, "ip", "netns", "del", n.Name); err != nil && !strings.Contains(err.Error(), "No such file") {
		return err
	}
	return nil
}

// Cleanup removes every namespace, interface and rule of this instance.
func (m *Manager) Cleanup(ctx context.Context) error {
	entries, _ := os.ReadDir("/run/netns")
	prefix := fmt.Sprintf("berth-%s-", m.prefix)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			_ = run(ctx, "ip", "netns", "del", e.Name())
		}
	}
	links, _ := os.ReadDir("/sys/class/net")
	for _, l := range links {
		if strings.HasPrefix(l.Name(), m.ifPrefix()) {
			_ = run(ctx, "ip", "link", "del", l.Name())
		}
	}
	if _, err := exec.LookPath("nft"); err == nil {
		_ = run(ctx, "nft", "delete", "table", "inet", m.table())
	}
	m.mu.Lock()
	m.ready = false
	m.mu.Unlock()
	return nil
}

// resolvers returns the IPv4 name servers of a resolv.conf that a sandbox
// can reach through the host (loopback ones cannot be).
func resolvers(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		if a, err := netip.ParseAddr(f[1]); err == nil && a.Is4() && !a.IsLoopback() {
			out = append(out, a.String())
		}
	}
	return out
}

func run(ctx context.Context, name string, args ...string) error {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}
