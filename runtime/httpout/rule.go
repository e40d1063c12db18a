package httpout

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Rule is one parsed entry of a consumer's allow list. Its text form is
// [SCHEME://]HOST[:PORT]:
//
//   - SCHEME is http, https or *; absent means https only, so plain-text
//     HTTP is never granted by accident.
//   - HOST is a DNS name, an IP literal (IPv6 in brackets), or *.SUFFIX,
//     which matches every name ending in .SUFFIX at any depth but not SUFFIX
//     itself and never an IP literal.
//   - PORT is a number or *; absent means the scheme's default port.
type Rule struct {
	// Scheme is "http", "https" or "*".
	Scheme string
	// Host is the lower-cased name or IP literal, or the suffix after "*."
	// when Wildcard is set.
	Host string
	// Wildcard marks a *.SUFFIX entry.
	Wildcard bool
	// Port is the port number, 0 for the scheme's default, -1 for any.
	Port int
	// IP is set when Host is an IP literal.
	IP netip.Addr
	// Text is the entry as written, which metrics use as the host label so
	// that their cardinality is bounded by the config, not by the guest.
	Text string
}

// ParseRule parses one allow-list entry. Its errors say what is wrong in
// words fit for a config diagnostic.
func ParseRule(s string) (Rule, error) {
	r := Rule{Scheme: "https", Text: s}
	rest := s
	if i := strings.Index(rest, "://"); i >= 0 {
		r.Scheme = strings.ToLower(rest[:i])
		rest = rest[i+3:]
		switch r.Scheme {
		case "http", "https", "*":
		default:
			return Rule{}, fmt.Errorf("scheme %q is not http, https or *", r.Scheme)
		}
	}
	if strings.ContainsAny(rest, "/?#@") {
		return Rule{}, fmt.Errorf("%q has a path, query or user part; an entry is [scheme://]host[:port]", s)
	}
	host, port := rest, ""
	if strings.HasPrefix(rest, "[") {
		end := strings.Index(rest, "]")
		if end < 0 {
			return Rule{}, fmt.Errorf("%q has an unclosed [", s)
		}
		host, port = rest[1:end], strings.TrimPrefix(rest[end+1:], ":")
		if rest[end+1:] != "" && !strings.HasPrefix(rest[end+1:], ":") {
			return Rule{}, fmt.Errorf("%q has text after ]", s)
		}
	} else if i := strings.LastIndex(rest, ":"); i >= 0 {
		host, port = rest[:i], rest[i+1:]
	}
	switch port {
	case "":
	case "*":
		r.Port = -1
	default:
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return Rule{}, fmt.Errorf("port %q is not a number from 1 to 65535 or *", port)
		}
		r.Port = n
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if suffix, ok := strings.CutPrefix(host, "*."); ok {
		r.Wildcard, host = true, suffix
	}
	if host == "" || strings.Contains(host, "*") {
		return Rule{}, fmt.Errorf("host %q is not a name, an IP address or *.suffix (a * stands only for whole leading labels, and a bare * is not allowed)", host)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if r.Wildcard {
			return Rule{}, fmt.Errorf("*.%s: a wildcard cannot precede an IP address", host)
		}
		r.IP = ip.Unmap()
		host = r.IP.String()
	} else if !validName(host) {
		return Rule{}, fmt.Errorf("host %q is not a valid DNS name", host)
	}
	r.Host = host
	return r, nil
}

func validName(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// defaultPort is the port a URL without one uses.
func defaultPort(scheme string) int {
	if scheme == "http" {
		return 80
	}
	return 443
}

// matches reports whether the rule admits scheme://host:port. host is
// lower-cased without brackets or trailing dot; ip is valid when host is
// an IP literal.
func (r *Rule) matches(scheme, host string, ip netip.Addr, port int) bool {
	if r.Scheme != "*" && r.Scheme != scheme {
		return false
	}
	switch {
	case r.Port == -1:
	case r.Port == 0:
		if port != defaultPort(scheme) {
			return false
		}
	case r.Port != port:
		return false
	}
	if ip.IsValid() {
		return r.IP.IsValid() && r.IP == ip
	}
	if r.IP.IsValid() {
		return false
	}
	if r.Wildcard {
		return strings.HasSuffix(host, "."+r.Host)
	}
	return host == r.Host
}

// String is the entry as written.
func (r Rule) String() string { return r.Text }

// public reports whether ip is an ordinary internet address. Loopback,
// private, link-local, unspecified, multicast, carrier-grade NAT and the
// "this network" block are not: reaching them from a guest is how a sandbox
// becomes a proxy into the machine's own network.
func public(ip netip.Addr) bool {
	ip = ip.Unmap()
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsUnspecified() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast() {
		return false
	}
	for _, p := range nonPublic() {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// nonPublic lists ranges netip has no predicate for. A function, not a
// variable, so nothing can change the list at run time; it runs once per
// dial, next to a network round trip.
func nonPublic() [6]netip.Prefix {
	return [...]netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),
		netip.MustParsePrefix("100.64.0.0/10"),
		netip.MustParsePrefix("192.0.0.0/24"),
		netip.MustParsePrefix("198.18.0.0/15"),
		netip.MustParsePrefix("240.0.0.0/4"),
		netip.MustParsePrefix("64:ff9b::/96"),
	}
}

// splitHostPort splits a dial address, parsing the port.
func splitHostPort(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", p, err)
	}
	return strings.TrimSuffix(strings.ToLower(h), "."), n, nil
}
