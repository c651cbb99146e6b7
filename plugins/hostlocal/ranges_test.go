package hostlocal

import (
	"net/netip"
	"slices"
	"testing"
)

func mustRange(t *testing.T, r Range) rng {
	t.Helper()
	p, err := parseRange("r", r)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func collect(s rangeSet, last string) []string {
	var l netip.Addr
	if last != "" {
		l = netip.MustParseAddr(last)
	}
	var out []string
	for ip := range s.candidates(l) {
		out = append(out, ip.String())
	}
	return out
}

func TestCandidatesOrder(t *testing.T) {
	a := mustRange(t, Range{Subnet: "10.0.0.0/29"})                                              // .1 gw, .2-.6
	b := mustRange(t, Range{Subnet: "10.0.1.0/29", RangeStart: "10.0.1.5", Gateway: "10.0.1.6"}) // .5, (.6 gw)
	set := rangeSet{a, b}
	cases := []struct {
		last string
		want []string
	}{
		{"", []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.1.5"}},
		{"10.0.0.4", []string{"10.0.0.5", "10.0.0.6", "10.0.1.5", "10.0.0.2", "10.0.0.3", "10.0.0.4"}},
		{"10.0.0.6", []string{"10.0.1.5", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"}},
		{"10.0.1.5", []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.1.5"}},
		{"10.0.0.1", []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.1.5"}},
		{"10.9.9.9", []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.1.5"}},
		{"fd00::1", []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.1.5"}},
	}
	for _, c := range cases {
		if got := collect(set, c.last); !slices.Equal(got, c.want) {
			t.Errorf("after %q: %v, want %v", c.last, got, c.want)
		}
	}
}

func TestDefaults(t *testing.T) {
	cases := []struct {
		subnet, start, end, gw string
	}{
		{"10.0.0.0/24", "10.0.0.1", "10.0.0.254", "10.0.0.1"},
		{"10.0.0.0/30", "10.0.0.1", "10.0.0.2", "10.0.0.1"},
		{"fd00::/120", "fd00::1", "fd00::ff", "fd00::1"},
		{"fd00::/64", "fd00::1", "fd00::ffff:ffff:ffff:ffff", "fd00::1"},
		{"10.0.0.0/7", "10.0.0.1", "11.255.255.254", "10.0.0.1"},
	}
	for _, c := range cases {
		r := mustRange(t, Range{Subnet: c.subnet})
		if r.start.String() != c.start || r.end.String() != c.end || r.gw.String() != c.gw {
			t.Errorf("%s: %s-%s gw %s", c.subnet, r.start, r.end, r.gw)
		}
	}
}

// TestNamesMatchReference checks that netip's text form of an address is
// the one net.IP.String gives (the reference names its files with it).
func TestNamesMatchReference(t *testing.T) {
	for _, s := range []string{"10.0.0.1", "fd00::1", "fd00:0:0:1::", "2001:db8::1:0:0:1", "2001:db8:0:1:1:1:1:1", "::", "::1", "fe80::"} {
		ip := netip.MustParseAddr(s)
		if got, want := ip.String(), netIPString(ip); got != want {
			t.Errorf("%s: netip %q, net %q", s, got, want)
		}
	}
}
