package ratelimit_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/flashgate/flashgate/ratelimit"
)

func TestParseProxies(t *testing.T) {
	p, err := ratelimit.ParseProxies([]string{"10.0.0.0/8", " 192.0.2.7 ", "", "fd00::/8", "::1", "::ffff:172.16.0.0/108", "10.1.2.3/8"})
	if err != nil || p.Len() != 6 {
		t.Fatalf("ParseProxies = %d networks, %v", p.Len(), err)
	}
	for _, bad := range []string{"10.0.0.0/33", "10.0.0", "proxy.example", "fe80::1%eth0", "1.2.3.4:80", "::/129", "10.0.0.0/8/8"} {
		_, err := ratelimit.ParseProxies([]string{"10.0.0.0/8", bad})
		if err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("ParseProxies(%q) = %v, want an error naming it", bad, err)
		}
	}
	if p, err := ratelimit.ParseProxies(nil); err != nil || p.Len() != 0 {
		t.Errorf("ParseProxies(nil) = %d, %v", p.Len(), err)
	}
}

func TestClientIP(t *testing.T) {
	proxies, err := ratelimit.ParseProxies([]string{"10.0.0.0/8", "2001:db8:ffff::/48", "::ffff:172.16.0.0/108"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		none   bool // with no trusted proxies
		remote string
		xff    []string
		want   string
	}{
		{name: "direct", remote: "198.51.100.7:5000", want: "198.51.100.7"},
		{name: "direct ignores XFF", remote: "198.51.100.7:5000", xff: []string{"203.0.113.1"}, want: "198.51.100.7"},
		{name: "no proxies ignores XFF", none: true, remote: "10.0.0.1:5000", xff: []string{"203.0.113.1"}, want: "10.0.0.1"},
		{name: "direct IPv6", remote: "[2001:DB8::0:1]:443", want: "2001:db8::1"},
		{name: "mapped peer", remote: "[::ffff:198.51.100.7]:443", want: "198.51.100.7"},
		{name: "zone dropped", remote: "[fe80::1%eth0]:443", want: "fe80::1"},
		{name: "bare remote", remote: "198.51.100.7", want: "198.51.100.7"},
		{name: "bad remote", remote: "@", want: ""},
		{name: "empty remote", remote: "", want: ""},
		{name: "one proxy", remote: "10.0.0.1:5000", xff: []string{"203.0.113.1"}, want: "203.0.113.1"},
		{name: "proxy, no XFF", remote: "10.0.0.1:5000", want: "10.0.0.1"},
		{name: "client forges the left", remote: "10.0.0.1:5000", xff: []string{"1.1.1.1, 203.0.113.1"}, want: "203.0.113.1"},
		{name: "chain of proxies", remote: "10.0.0.1:5000", xff: []string{"1.1.1.1, 203.0.113.1, 10.9.9.9,10.8.8.8"}, want: "203.0.113.1"},
		{name: "several lines in order", remote: "10.0.0.1:5000", xff: []string{"1.1.1.1, 203.0.113.1", "10.9.9.9", "10.8.8.8"}, want: "203.0.113.1"},
		{name: "last line first", remote: "10.0.0.1:5000", xff: []string{"203.0.113.1", "203.0.113.2"}, want: "203.0.113.2"},
		{name: "all trusted", remote: "10.0.0.1:5000", xff: []string{"10.1.1.1, 10.2.2.2"}, want: "10.1.1.1"},
		{name: "malformed stops at the last good", remote: "10.0.0.1:5000", xff: []string{"203.0.113.1, garbage, 10.2.2.2"}, want: "10.2.2.2"},
		{name: "malformed right away", remote: "10.0.0.1:5000", xff: []string{"203.0.113.1, unknown"}, want: "10.0.0.1"},
		{name: "empty elements skipped", remote: "10.0.0.1:5000", xff: []string{"203.0.113.1,, 10.2.2.2 ,", ""}, want: "203.0.113.1"},
		{name: "OWS", remote: "10.0.0.1:5000", xff: []string{" \t203.0.113.1\t "}, want: "203.0.113.1"},
		{name: "ports", remote: "10.0.0.1:5000", xff: []string{"203.0.113.1:4711, 10.2.2.2:80"}, want: "203.0.113.1"},
		{name: "IPv6 entries", remote: "[2001:db8:ffff::1]:443", xff: []string{"2001:db8:1::7, [2001:db8:ffff::2]:80"}, want: "2001:db8:1::7"},
		{name: "bracketed IPv6", remote: "10.0.0.1:5000", xff: []string{"[2001:db8:1::7]"}, want: "2001:db8:1::7"},
		{name: "bracketed IPv4 is malformed", remote: "10.0.0.1:5000", xff: []string{"[203.0.113.1]"}, want: "10.0.0.1"},
		{name: "mapped entry", remote: "10.0.0.1:5000", xff: []string{"::ffff:203.0.113.1"}, want: "203.0.113.1"},
		{name: "mapped proxy network", remote: "172.16.0.1:5000", xff: []string{"203.0.113.1, 172.16.5.5"}, want: "203.0.113.1"},
		{name: "mapped peer trusted", remote: "[::ffff:10.0.0.1]:5000", xff: []string{"203.0.113.1"}, want: "203.0.113.1"},
		{name: "quoted is malformed", remote: "10.0.0.1:5000", xff: []string{`"203.0.113.1"`}, want: "10.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := proxies
			if tt.none {
				p = ratelimit.Proxies{}
			}
			if got := p.ClientIP(tt.remote, tt.xff); got != tt.want {
				t.Errorf("ClientIP(%q, %q) = %q, want %q", tt.remote, tt.xff, got, tt.want)
			}
		})
	}
}

func TestIPKey(t *testing.T) {
	for in, want := range map[string]string{
		"198.51.100.7":            "198.51.100.7",
		"::ffff:198.51.100.7":     "198.51.100.7",
		"2001:db8:1:2:3:4:5:6":    "2001:db8:1:2::/64",
		"2001:db8:1:2::9":         "2001:db8:1:2::/64",
		"fe80::1%eth0":            "fe80::/64",
		"":                        "",
		"garbage":                 "",
		"198.51.100.7:80":         "",
		"2001:0db8:0001:0002::ff": "2001:db8:1:2::/64",
	} {
		if got := ratelimit.IPKey(in); got != want {
			t.Errorf("IPKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzClientIP(f *testing.F) {
	proxies, err := ratelimit.ParseProxies([]string{"10.0.0.0/8", "2001:db8:ffff::/48", "127.0.0.1"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add("10.0.0.1:5000", "1.1.1.1, 203.0.113.1, 10.9.9.9", "10.8.8.8")
	f.Add("[2001:db8:ffff::1]:443", "2001:db8:1::7, [2001:db8:ffff::2]:80", "")
	f.Add("127.0.0.1:1", "garbage,,", "[::ffff:10.1.1.1]")
	f.Add("[fe80::1%eth0]:1", "fe80::2%lo", "unknown")
	f.Fuzz(func(t *testing.T, remote, xff1, xff2 string) {
		for _, p := range []ratelimit.Proxies{{}, proxies} {
			got := p.ClientIP(remote, []string{xff1, xff2})
			if got == "" {
				continue
			}
			a, err := netip.ParseAddr(got)
			if err != nil || a.String() != got || a.Is4In6() || a.Zone() != "" {
				t.Fatalf("ClientIP(%q, %q, %q) = %q: not a canonical address", remote, xff1, xff2, got)
			}
			if k := ratelimit.IPKey(got); k == "" {
				t.Fatalf("IPKey(%q) is empty", got)
			}
		}
	})
}
