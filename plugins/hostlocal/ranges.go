package hostlocal

import (
	"iter"
	"net/netip"
	"strings"
)

// rng is a validated range: addresses start..end (inclusive) of subnet,
// with gateway gw never handed out.
type rng struct {
	subnet         netip.Prefix
	start, end, gw netip.Addr
}

func (r rng) String() string { return r.start.String() + "-" + r.end.String() }

func (r rng) contains(ip netip.Addr) bool {
	return ip.Is4() == r.start.Is4() && !ip.Less(r.start) && !r.end.Less(ip)
}

// overlaps reports whether two ranges share an address (ranges of
// different families never do).
func (r rng) overlaps(o rng) bool {
	return r.start.Is4() == o.start.Is4() && !o.end.Less(r.start) && !r.end.Less(o.start)
}

// rangeSet is a validated list of ranges of one family.
type rangeSet []rng

func (s rangeSet) String() string {
	parts := make([]string, len(s))
	for i, r := range s {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

// rangeFor returns the index of the range holding ip, or -1.
func (s rangeSet) rangeFor(ip netip.Addr) int {
	for i, r := range s {
		if r.contains(ip) {
			return i
		}
	}
	return -1
}

func (s rangeSet) overlap(o rangeSet) (rng, rng, bool) {
	for _, a := range s {
		for _, b := range o {
			if a.overlaps(b) {
				return a, b, true
			}
		}
	}
	return rng{}, rng{}, false
}

// candidates yields every allocatable address of the set once, with the
// index of its range, in the reference's round-robin order: from the
// address after last (when last is in the set) through the end of its
// range, on to the following ranges, wrapping around; each range's
// gateway is skipped. Without a usable last it starts at the first range's
// start.
func (s rangeSet) candidates(last netip.Addr) iter.Seq2[netip.Addr, int] {
	return func(yield func(netip.Addr, int) bool) {
		ri, a := 0, s[0].start
		if i := s.rangeFor(last); i >= 0 {
			ri, a = s.advance(i, last)
		}
		startRi, startA := ri, a
		for {
			if a != s[ri].gw && !yield(a, ri) {
				return
			}
			ri, a = s.advance(ri, a)
			if ri == startRi && a == startA {
				return
			}
		}
	}
}

// advance steps from address a of range ri to the next address of the set.
func (s rangeSet) advance(ri int, a netip.Addr) (int, netip.Addr) {
	if a == s[ri].end {
		ri = (ri + 1) % len(s)
		return ri, s[ri].start
	}
	return ri, a.Next()
}
