package egress

import (
	"net"
	"net/netip"
)

// forbidden are ranges no sandbox reaches unless a rule names the address:
// the host and its neighbours, not the internet.
var forbidden = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
		"172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "224.0.0.0/3",
		"::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8", "64:ff9b::/96",
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

// why says why addr may not be reached, or "" if it may.
func (p Policy) why(addr netip.Addr, own func(netip.Addr) bool) string {
	addr = addr.Unmap()
	if p.allowsAddr(addr) {
		return ""
	}
	switch {
	case addr == netip.AddrFrom4([4]byte{169, 254, 169, 254}):
		return "a cloud metadata address"
	case addr.IsLoopback():
		return "a loopback address"
	case addr.IsLinkLocalUnicast() || addr.IsLinkLocalMulticast():
		return "a link-local address"
	case own != nil && own(addr):
		return "an address of the Berth host"
	}
	for _, f := range forbidden {
		if f.Contains(addr) {
			return "a private or reserved address"
		}
	}
	return ""
}

// hostAddrs reports whether addr is one of this host's own addresses, read
// at each call (interfaces come and go with sandboxes).
func hostAddrs(addr netip.Addr) bool {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return true // unsure: refuse
	}
	for _, a := range as {
		if n, ok := a.(*net.IPNet); ok {
			if x, ok := netip.AddrFromSlice(n.IP); ok && x.Unmap() == addr {
				return true
			}
		}
	}
	return false
}
