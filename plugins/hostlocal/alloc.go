package hostlocal

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/ipam/ipargs"
)

// grant is one allocated address and the range it came from.
type grant struct {
	ip netip.Addr
	r  rng
}

// maxBlindTries is how many taken addresses allocation tries one by one
// before listing the directory once and skipping the taken ones in memory.
const maxBlindTries = 8

// allocate reserves one address per range set for the attachment, all or
// nothing: if any set fails, the addresses already reserved by this call
// are released.
func (s *store) allocate(n *netConf, cid, ifname string) ([]grant, error) {
	owner := ownerKey(cid, ifname)
	wanted, err := assignRequested(n)
	if err != nil {
		return nil, err
	}
	own, err := s.heldBy(owner)
	if err != nil {
		return nil, err
	}
	legacy, err := s.heldBy(legacyKey(cid))
	if err != nil {
		return nil, err
	}
	held := append(slices.Clip(own), legacy...)
	var got []grant
	for i, set := range n.sets {
		g, err := s.allocateSet(i, set, wanted[i], held, owner, cid, ifname)
		if err != nil {
			s.undo(got)
			return nil, err
		}
		got = append(got, g)
		own = append(own, g.ip)
	}
	if err := s.setEntry(owner, own); err != nil {
		s.undo(got)
		return nil, err
	}
	return got, nil
}

func (s *store) allocateSet(i int, set rangeSet, want *ipargs.Addr, held []netip.Addr, owner, cid, ifname string) (grant, error) {
	for _, ip := range held {
		if set.rangeFor(ip) >= 0 {
			return grant{}, cni.Errorf(cni.ErrAddressInUse,
				"range set %d: %s is already allocated to container %s interface %s; duplicate allocation is not allowed", i, ip, cid, ifname)
		}
	}
	if want != nil {
		return s.reserveRequested(i, set, *want, owner)
	}
	return s.reserveNext(i, set, owner)
}

// assignRequested gives each range set the first requested address it
// contains; an address no set takes is an error before anything is
// reserved (the reference finds out after allocating and rolls back).
func assignRequested(n *netConf) ([]*ipargs.Addr, error) {
	wanted := make([]*ipargs.Addr, len(n.sets))
	for k := range n.requested {
		a := &n.requested[k]
		in := -1
		for i, set := range n.sets {
			if set.rangeFor(a.IP) >= 0 {
				in = i
				break
			}
		}
		switch {
		case in < 0:
			return nil, cni.ConfigError(a.Source, "requested address %s is not in any range set (%s)", a.IP, setsString(n.sets))
		case wanted[in] != nil:
			return nil, cni.ConfigError(a.Source, "requested addresses %s and %s are both in range set %d; one address is allocated per range set", wanted[in].IP, a.IP, in)
		}
		wanted[in] = a
	}
	return wanted, nil
}

func setsString(sets []rangeSet) string {
	out := ""
	for i, s := range sets {
		if i > 0 {
			out += "; "
		}
		out += fmt.Sprintf("%d: %s", i, s)
	}
	return out
}

func (s *store) reserveRequested(i int, set rangeSet, a ipargs.Addr, owner string) (grant, error) {
	r := set[set.rangeFor(a.IP)]
	if a.IP == r.gw {
		return grant{}, cni.ConfigError(a.Source, "requested address %s is the gateway of range %s", a.IP, r)
	}
	ok, err := s.reserve(a.IP, owner, i)
	if err != nil {
		return grant{}, err
	}
	if !ok {
		return grant{}, cni.Errorf(cni.ErrAddressInUse, "%s: requested address %s is already allocated (range set %d: %s)", a.Source, a.IP, i, set)
	}
	return grant{ip: a.IP, r: r}, nil
}

// reserveNext takes the first free address in round-robin order after the
// set's last reserved address.
func (s *store) reserveNext(i int, set rangeSet, owner string) (grant, error) {
	var taken map[netip.Addr]bool
	misses := 0
	for ip, ri := range set.candidates(s.lastReserved(i)) {
		if taken[ip] {
			continue
		}
		ok, err := s.reserve(ip, owner, i)
		if err != nil {
			return grant{}, err
		}
		if ok {
			return grant{ip: ip, r: set[ri]}, nil
		}
		if misses++; misses == maxBlindTries {
			// Crowded: one listing replaces a failed create per taken
			// address. The listing is only a hint; reserve still decides.
			if taken, err = s.ipNames(); err != nil {
				return grant{}, err
			}
		}
	}
	return grant{}, cni.Errorf(cni.ErrRangeExhausted, "range set %d: no IP addresses available in %s", i, set)
}

// undo releases addresses this operation reserved.
func (s *store) undo(got []grant) {
	for _, g := range got {
		_, _ = s.remove(g.ip)
	}
}

// heldBy returns the addresses the index records for owner (an owner key
// as written in address files), each confirmed against its file: the index
// can make this answer smaller than the truth only if its stamp lied, and
// never names another owner's address.
func (s *store) heldBy(owner string) ([]netip.Addr, error) {
	ips, err := s.lookup(owner)
	if err != nil {
		return nil, err
	}
	out := ips[:0]
	for _, ip := range ips {
		got, err := s.owner(ip)
		if err != nil {
			return nil, err
		}
		if got == owner {
			out = append(out, ip)
		}
	}
	return out, nil
}

// held returns the addresses of the attachment as the reference's GetByID
// counts them: its own files and legacy files of its container.
func (s *store) held(cid, ifname string) ([]netip.Addr, error) {
	own, err := s.heldBy(ownerKey(cid, ifname))
	if err != nil {
		return nil, err
	}
	legacy, err := s.heldBy(legacyKey(cid))
	return append(own, legacy...), err
}

// release frees every address of the attachment. As in the reference,
// legacy files (container ID only) are released only when the attachment
// had no files of its own.
func (s *store) release(cid, ifname string) error {
	for _, owner := range []string{ownerKey(cid, ifname), legacyKey(cid)} {
		ips, err := s.lookup(owner)
		if err != nil {
			return err
		}
		found := false
		for _, ip := range ips {
			ok, err := s.releaseIfOwned(ip, owner)
			if err != nil {
				return err
			}
			found = found || ok
		}
		if len(ips) > 0 {
			if err := s.setEntry(owner, nil); err != nil {
				return err
			}
		}
		if found {
			return nil
		}
	}
	return nil
}
