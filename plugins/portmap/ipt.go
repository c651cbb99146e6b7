package portmap

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	"github.com/coreos/go-iptables/iptables"

	"github.com/knit-cni/knit/pkg/hostns"
	"github.com/knit-cni/knit/pkg/iptutil"
	"github.com/knit-cni/knit/pkg/nftown"
)

// The iptables backend has the reference's structure under knit's own chain
// names, all in the nat table:
//
//	PREROUTING, OUTPUT: -m addrtype --dst-type LOCAL -j KNIT-HOSTPORT-DNAT
//	KNIT-HOSTPORT-DNAT: -m comment --comment OWNER -m multiport -p tcp
//	                    --destination-ports 8080,8081 [conditions] -j KNIT-DN-<hash>
//	KNIT-DN-<hash>:     per mapping: mark hairpin/localhost, then DNAT
//	KNIT-HOSTPORT-SETMARK: -j MARK --set-xmark BIT/BIT
//	POSTROUTING (first): -j KNIT-HOSTPORT-MASQ: -m mark --mark BIT/BIT -j MASQUERADE
//
// iptables offers no atomic multi-rule update, so a failed ADD removes what
// it added before returning.
const (
	iptNat       = "nat"
	iptTopDNAT   = "KNIT-HOSTPORT-DNAT"
	iptSetMark   = "KNIT-HOSTPORT-SETMARK"
	iptMasq      = "KNIT-HOSTPORT-MASQ"
	iptDNPrefix  = "KNIT-DN-"
	iptLockName  = "knit_hostport_iptables"
	multiportMax = 15
)

func dnChain(owner string) string {
	return iptDNPrefix + strings.TrimPrefix(nftown.OwnerChain(owner), nftown.OwnerChainPrefix)[:16]
}

type iptBackend struct{ host *hostns.Host }

func (b iptBackend) locked(fn func() error) error {
	unlock, err := b.host.Lock(iptLockName)
	if err != nil {
		return err
	}
	defer unlock()
	return b.host.Do(fn)
}

func (b iptBackend) add(s *settings, owner string, ips contIPs) error {
	return b.locked(func() error {
		for fi, cip := range []*net.IPNet{ips.v4, ips.v6} {
			if cip == nil || !hasFamilyWork(s, fi == 0) {
				continue
			}
			ipt, err := iptutil.New(fi == 1)
			if err != nil {
				return err
			}
			if err := iptTeardown(ipt, owner); err != nil {
				return err
			}
			if err := iptForward(ipt, s, owner, cip); err != nil {
				return errors.Join(err, iptTeardown(ipt, owner))
			}
		}
		return nil
	})
}

func iptForward(ipt *iptables.IPTables, s *settings, owner string, cip *net.IPNet) error {
	mark := s.setMark
	if s.snat && mark == "" {
		mark = iptSetMark
		if err := iptMarkChains(ipt, s.markBit); err != nil {
			return err
		}
	}
	if err := iptutil.EnsureChain(ipt, iptNat, iptTopDNAT); err != nil {
		return err
	}
	for _, ch := range []string{"PREROUTING", "OUTPUT"} {
		if err := iptutil.EnsureFirst(ipt, iptNat, ch, "-m", "addrtype", "--dst-type", "LOCAL", "-j", iptTopDNAT); err != nil {
			return err
		}
	}
	dn := dnChain(owner)
	if err := iptutil.EnsureChain(ipt, iptNat, dn); err != nil {
		return err
	}
	for _, r := range iptDNATRules(s, cip, mark) {
		if err := ipt.Append(iptNat, dn, r...); err != nil {
			return err
		}
	}
	// At the top: of two containers claiming one host port (a stale one and
	// its successor) the newest wins, as with nftables.
	for _, r := range iptEntryRules(s, owner, cip) {
		if err := ipt.Insert(iptNat, iptTopDNAT, 1, r...); err != nil {
			return err
		}
	}
	return nil
}

func iptMarkChains(ipt *iptables.IPTables, bit uint) error {
	m := fmt.Sprintf("%#x/%#x", 1<<bit, 1<<bit)
	for _, ch := range []string{iptSetMark, iptMasq} {
		if err := iptutil.EnsureChain(ipt, iptNat, ch); err != nil {
			return err
		}
	}
	if err := ipt.AppendUnique(iptNat, iptSetMark, "-m", "comment", "--comment", "knit portmap masquerade mark",
		"-j", "MARK", "--set-xmark", m); err != nil {
		return err
	}
	if err := ipt.AppendUnique(iptNat, iptMasq, "-m", "mark", "--mark", m, "-j", "MASQUERADE"); err != nil {
		return err
	}
	// First in POSTROUTING: masquerade rules of bridge/ptp must not
	// intercept these connections first.
	return iptutil.EnsureFirst(ipt, iptNat, "POSTROUTING", "-m", "comment", "--comment",
		"knit portmap requiring masquerade", "-j", iptMasq)
}

// iptEntryRules jump from KNIT-HOSTPORT-DNAT to the container's chain for
// its ports, by protocol, at most 15 ports per multiport match.
func iptEntryRules(s *settings, owner string, cip *net.IPNet) [][]string {
	v4 := cip.IP.To4() != nil
	byProto := map[string][]string{}
	for _, m := range s.maps {
		if (v4 && m.family4) || (!v4 && m.family6) {
			byProto[m.protoName] = append(byProto[m.protoName], strconv.Itoa(int(m.hostPort)))
		}
	}
	cond := s.rawCond[0]
	if !v4 {
		cond = s.rawCond[1]
	}
	var out [][]string
	for _, proto := range nftown.SortedKeys(byProto) {
		ports := byProto[proto]
		sort.Strings(ports)
		for i := 0; i < len(ports); i += multiportMax {
			chunk := ports[i:min(i+multiportMax, len(ports))]
			r := append(iptutil.Comment(owner), "-m", "multiport", "-p", proto, "--destination-ports", strings.Join(chunk, ","))
			r = append(r, cond...)
			out = append(out, append(r, "-j", dnChain(owner)))
		}
	}
	return out
}

// iptDNATRules are the container chain's rules: for every mapping the mark
// rules (hairpin from the container's subnet, or everyone with masqAll;
// IPv4 localhost) before the DNAT itself.
func iptDNATRules(s *settings, cip *net.IPNet, mark string) [][]string {
	v4 := cip.IP.To4() != nil
	var out [][]string
	for _, m := range s.maps {
		if (v4 && !m.family4) || (!v4 && !m.family6) {
			continue
		}
		base := []string{"-p", m.protoName, "--dport", strconv.Itoa(int(m.hostPort))}
		if m.hostIP != nil {
			base = append(base, "-d", m.hostIP.String())
		}
		with := func(extra ...string) []string { return append(append([]string(nil), base...), extra...) }
		if s.snat {
			src := subnetOf(cip).String()
			if s.MasqAll {
				src = "0.0.0.0/0"
				if !v4 {
					src = "::/0"
				}
			}
			out = append(out, with("-s", src, "-j", mark))
			if v4 && !s.MasqAll {
				out = append(out, with("-s", "127.0.0.0/8", "-j", mark))
			}
		}
		out = append(out, with("-j", "DNAT", "--to-destination", net.JoinHostPort(cip.IP.String(), strconv.Itoa(int(m.containerPort)))))
	}
	return out
}

// iptTeardown removes owner's entry rules and chain from one family.
func iptTeardown(ipt *iptables.IPTables, owner string) error {
	dn := dnChain(owner)
	if _, err := iptutil.DeleteMatching(ipt, iptNat, iptTopDNAT, func(r string) bool {
		return iptutil.TargetOf(r) == dn
	}); err != nil {
		return err
	}
	return iptutil.DeleteChain(ipt, iptNat, dn)
}

func (b iptBackend) del(owner string) error {
	return b.locked(func() error {
		var errs []error
		for _, v6 := range []bool{false, true} {
			if ipt := iptutil.Usable(v6, iptNat); ipt != nil {
				errs = append(errs, iptTeardown(ipt, owner))
			}
		}
		return errors.Join(errs...)
	})
}

func (b iptBackend) check(s *settings, owner string, ips contIPs) error {
	return b.host.Do(func() error {
		for fi, cip := range []*net.IPNet{ips.v4, ips.v6} {
			if cip == nil || !hasFamilyWork(s, fi == 0) {
				continue
			}
			ipt, err := iptutil.New(fi == 1)
			if err != nil {
				return err
			}
			if err := iptCheck(ipt, s, owner, cip); err != nil {
				return err
			}
		}
		return nil
	})
}

func iptCheck(ipt *iptables.IPTables, s *settings, owner string, cip *net.IPNet) error {
	mark := s.setMark
	if mark == "" {
		mark = iptSetMark
	}
	want := map[string][][]string{dnChain(owner): iptDNATRules(s, cip, mark), iptTopDNAT: iptEntryRules(s, owner, cip)}
	for _, chain := range nftown.SortedKeys(want) {
		for _, r := range want[chain] {
			ok, err := ipt.Exists(iptNat, chain, r...)
			if err != nil {
				return fmt.Errorf("checking %s: %w", chain, err)
			}
			if !ok {
				return fmt.Errorf("iptables rule missing in %s: %s", chain, strings.Join(r, " "))
			}
		}
	}
	return nil
}

// gc removes the entries and chains of network's owners not in valid.
func (b iptBackend) gc(network string, valid map[string]bool) error {
	prefix := nftown.NetworkPrefix(network)
	return b.locked(func() error {
		var errs []error
		for _, v6 := range []bool{false, true} {
			ipt := iptutil.Usable(v6, iptNat)
			if ipt == nil {
				continue
			}
			stale := map[string]bool{}
			_, err := iptutil.DeleteMatching(ipt, iptNat, iptTopDNAT, func(r string) bool {
				owner := iptutil.CommentOf(r)
				if !strings.HasPrefix(owner, prefix) || valid[owner] {
					return false
				}
				stale[iptutil.TargetOf(r)] = true
				return true
			})
			errs = append(errs, err)
			for ch := range stale {
				if strings.HasPrefix(ch, iptDNPrefix) {
					errs = append(errs, iptutil.DeleteChain(ipt, iptNat, ch))
				}
			}
		}
		return errors.Join(errs...)
	})
}

func subnetOf(n *net.IPNet) *net.IPNet {
	return &net.IPNet{IP: n.IP.Mask(n.Mask), Mask: n.Mask}
}
