package ratelimit

import (
	"fmt"
	"net/netip"
	"strings"
)

// Proxies is a set of trusted proxy networks. The zero value trusts none.
type Proxies struct {
	nets []netip.Prefix // masked, IPv4 networks unmapped
}

// ParseProxies parses trusted proxies, each a CIDR network ("10.0.0.0/8",
// "fd00::/8") or a bare address ("192.0.2.7", "::1"). Spaces around an
// entry are dropped and empty entries skipped, so a comma-separated flag
// can be split and passed as is. IPv4-mapped IPv6 networks
// ("::ffff:10.0.0.0/104") mean their IPv4 network. The error names the
// first bad entry.
func ParseProxies(list []string) (Proxies, error) {
	var p Proxies
	for _, entry := range list {
		s := strings.TrimSpace(entry)
		if s == "" {
			continue
		}
		var n netip.Prefix
		if strings.Contains(s, "/") {
			pre, err := netip.ParsePrefix(s)
			if err != nil {
				return Proxies{}, fmt.Errorf("trusted proxy %q: %w", entry, err)
			}
			n = pre.Masked()
		} else {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return Proxies{}, fmt.Errorf("trusted proxy %q: %w", entry, err)
			}
			if a.Zone() != "" {
				return Proxies{}, fmt.Errorf("trusted proxy %q: an address with a zone cannot be trusted", entry)
			}
			n = netip.PrefixFrom(a, a.BitLen())
		}
		if n.Addr().Is4In6() && n.Bits() >= 96 {
			n = netip.PrefixFrom(n.Addr().Unmap(), n.Bits()-96)
		}
		p.nets = append(p.nets, n)
	}
	return p, nil
}

// Len is the number of trusted networks.
func (p Proxies) Len() int { return len(p.nets) }

// trusted reports whether a (canonical) is in a trusted network.
func (p Proxies) trusted(a netip.Addr) bool {
	for _, n := range p.nets {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

// ClientIP returns the client's address, canonical (IPv4-mapped IPv6
// unmapped, no zone, IPv6 in RFC 5952 form), or "" when remoteAddr is not
// an address.
//
// It is the peer's address from remoteAddr ("ip:port", as net/http sets
// Request.RemoteAddr; a bare address is taken too) unless the peer is a
// trusted proxy. Then the X-Forwarded-For values xff (every header line,
// each comma-separated, in order) are walked from the right, skipping
// trusted proxies: the first untrusted address is the client. A malformed
// entry stops the walk at the last good address, which is then a trusted
// proxy's: its clients share its limits, rather than a forged entry
// choosing them. Empty list elements are skipped (RFC 9110, 5.6.1), and an
// entry may carry a port ("192.0.2.1:4711", "[2001:db8::1]:4711"). When
// every entry is trusted, the leftmost is the client. With no trusted
// proxies X-Forwarded-For is ignored entirely.
//
// See IPKey for what to count an address by.
func (p Proxies) ClientIP(remoteAddr string, xff []string) string {
	peer, ok := parseAddr(remoteAddr)
	if !ok {
		return ""
	}
	if len(p.nets) == 0 || !p.trusted(peer) {
		return peer.String()
	}
	last := peer
	for i := len(xff) - 1; i >= 0; i-- {
		line := xff[i]
		for line != "" {
			elem := line
			if j := strings.LastIndexByte(line, ','); j >= 0 {
				elem, line = line[j+1:], line[:j]
			} else {
				line = ""
			}
			elem = strings.Trim(elem, " \t")
			if elem == "" {
				continue
			}
			a, ok := parseAddr(elem)
			if !ok {
				return last.String()
			}
			if !p.trusted(a) {
				return a.String()
			}
			last = a
		}
	}
	return last.String()
}

// parseAddr parses "ip", "[ip]", "ip:port" or "[ip]:port" into a canonical
// address.
func parseAddr(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			if len(s) < 2 || s[0] != '[' || s[len(s)-1] != ']' {
				return netip.Addr{}, false
			}
			if a, err = netip.ParseAddr(s[1 : len(s)-1]); err != nil || !a.Is6() {
				return netip.Addr{}, false
			}
		} else {
			a = ap.Addr()
		}
	}
	return a.Unmap().WithZone(""), true
}

// IPKey is what a KeyIP policy should count the address ip (from ClientIP)
// by: an IPv4 address itself, and the /64 network of an IPv6 address, as
// "2001:db8:1:2::/64". A /64 is the smallest network usually given to one
// customer, who can pick addresses in it at will, so counting IPv6
// addresses one by one would let one client take 2^64 buckets. It returns
// "" for anything that is not an address.
func IPKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ""
	}
	a = a.Unmap().WithZone("")
	if a.Is4() {
		if a.String() == ip {
			return ip
		}
		return a.String()
	}
	return netip.PrefixFrom(a, 64).Masked().String()
}
