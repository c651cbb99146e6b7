package firewall

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/coreos/go-iptables/iptables"

	"github.com/knit-cni/knit/pkg/hostns"
	"github.com/knit-cni/knit/pkg/iptutil"
	"github.com/knit-cni/knit/pkg/nftown"
)

// The iptables backend is the reference's, under knit's own chain names
// (the admin chain keeps the reference's default, CNI-ADMIN: admins' rules
// there apply to both):
//
//	FORWARD: -j KNIT-ISOLATION-STAGE-1 (first), -j KNIT-FORWARD
//	KNIT-FORWARD: -j CNI-ADMIN (first); per address, commented with the owner:
//	  -d A/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT; -s A/32 -j ACCEPT
//	KNIT-ISOLATION-STAGE-1: -i BR ! -o BR -j STAGE-2; [isolated] -i BR -o BR -j DROP; -j RETURN
//	KNIT-ISOLATION-STAGE-2: -o BR -j DROP; -j RETURN
const (
	iptFilter      = "filter"
	iptForward     = "KNIT-FORWARD"
	iptStage1      = "KNIT-ISOLATION-STAGE-1"
	iptStage2      = "KNIT-ISOLATION-STAGE-2"
	iptLockName    = "knit_firewall_iptables"
	commentRules   = "knit firewall plugin rules"
	commentAdmin   = "knit firewall plugin admin overrides"
	commentPolicy  = "knit firewall ingress policy"
	iptBuiltinFwd  = "FORWARD"
	iptTargetRet   = "RETURN"
	iptTargetDrop  = "DROP"
	iptTargetAllow = "ACCEPT"
)

type iptBackend struct{ host *hostns.Host }

func (b iptBackend) locked(fn func() error) error {
	unlock, err := b.host.Lock(iptLockName)
	if err != nil {
		return err
	}
	defer unlock()
	return b.host.Do(fn)
}

// families returns the address families prevResult uses (both when there
// is no prevResult or no address), each with its addresses.
func families(s *settings) map[bool][]net.IP {
	if s.prev == nil || len(s.prev.IPs) == 0 {
		return map[bool][]net.IP{false: nil, true: nil}
	}
	out := map[bool][]net.IP{}
	for _, ipc := range s.prev.IPs {
		v6 := ipc.Address.IP.To4() == nil
		out[v6] = append(out[v6], ipc.Address.IP)
	}
	return out
}

func hostCIDR(ip net.IP) string {
	if ip.To4() != nil {
		return ip.String() + "/32"
	}
	return ip.String() + "/128"
}

func addrRules(owner string, ip net.IP) [][]string {
	c := iptutil.Comment(owner)
	return [][]string{
		append(append([]string{"-d", hostCIDR(ip)}, c...), "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", iptTargetAllow),
		append(append([]string{"-s", hostCIDR(ip)}, c...), "-j", iptTargetAllow),
	}
}

func (b iptBackend) add(s *settings, owner, bridge string) error {
	return b.locked(func() error {
		for v6, ips := range families(s) {
			ipt, err := iptutil.New(v6)
			if err != nil {
				return err
			}
			if err := iptAdd(ipt, s, owner, bridge, ips); err != nil {
				_, derr := iptDelOwner(ipt, owner)
				return errors.Join(err, derr)
			}
		}
		return nil
	})
}

func iptAdd(ipt *iptables.IPTables, s *settings, owner, bridge string, ips []net.IP) error {
	for _, ch := range []string{iptForward, s.admin} {
		if err := iptutil.EnsureChain(ipt, iptFilter, ch); err != nil {
			return err
		}
	}
	if err := iptutil.EnsureFirst(ipt, iptFilter, iptBuiltinFwd, append(iptutil.Comment(commentRules), "-j", iptForward)...); err != nil {
		return err
	}
	if err := iptutil.EnsureFirst(ipt, iptFilter, iptForward, append(iptutil.Comment(commentAdmin), "-j", s.admin)...); err != nil {
		return err
	}
	if bridge != "" {
		if err := iptIsolate(ipt, bridge, s.policy == PolicyIsolated); err != nil {
			return err
		}
	}
	if _, err := iptDelOwner(ipt, owner); err != nil {
		return err
	}
	for _, ip := range ips {
		for _, r := range addrRules(owner, ip) {
			if err := ipt.Append(iptFilter, iptForward, r...); err != nil {
				return err
			}
		}
	}
	return nil
}

func policyRule(r ...string) []string { return append(r, iptutil.Comment(commentPolicy)...) }

// iptIsolate sets up the reference's two isolation stages for bridge; its
// jump goes before KNIT-FORWARD's accepts.
func iptIsolate(ipt *iptables.IPTables, bridge string, isolated bool) error {
	for _, ch := range []string{iptStage1, iptStage2} {
		if err := iptutil.EnsureChain(ipt, iptFilter, ch); err != nil {
			return err
		}
	}
	if err := iptutil.EnsureFirst(ipt, iptFilter, iptBuiltinFwd, policyRule("-j", iptStage1)...); err != nil {
		return err
	}
	first := [][]string{policyRule("-i", bridge, "!", "-o", bridge, "-j", iptStage2)}
	if isolated {
		first = append(first, policyRule("-i", bridge, "-o", bridge, "-j", iptTargetDrop))
	}
	for _, r := range first {
		if err := iptutil.EnsureFirst(ipt, iptFilter, iptStage1, r...); err != nil {
			return err
		}
	}
	if err := iptutil.EnsureFirst(ipt, iptFilter, iptStage2, policyRule("-o", bridge, "-j", iptTargetDrop)...); err != nil {
		return err
	}
	for _, ch := range []string{iptStage1, iptStage2} {
		if err := ipt.AppendUnique(iptFilter, ch, policyRule("-j", iptTargetRet)...); err != nil {
			return err
		}
	}
	return nil
}

// iptUnisolate removes bridge's rules from the isolation stages.
func iptUnisolate(ipt *iptables.IPTables, bridge string) error {
	mentions := func(r string) bool {
		f := strings.Fields(r)
		for i := 0; i+1 < len(f); i++ {
			if (f[i] == "-i" || f[i] == "-o") && f[i+1] == bridge {
				return true
			}
		}
		return false
	}
	var errs []error
	for _, ch := range []string{iptStage1, iptStage2} {
		_, err := iptutil.DeleteMatching(ipt, iptFilter, ch, mentions)
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func iptDelOwner(ipt *iptables.IPTables, owner string) (int, error) {
	return iptutil.DeleteMatching(ipt, iptFilter, iptForward, func(r string) bool {
		return iptutil.CommentOf(r) == owner
	})
}

func (b iptBackend) del(owner, bridge string) error {
	return b.locked(func() error {
		var errs []error
		for _, v6 := range []bool{false, true} {
			ipt := iptutil.Usable(v6, iptFilter)
			if ipt == nil {
				continue
			}
			_, err := iptDelOwner(ipt, owner)
			errs = append(errs, err)
			if bridge != "" && !linkExists(b.host, bridge) {
				errs = append(errs, iptUnisolate(ipt, bridge))
			}
		}
		return errors.Join(errs...)
	})
}

func (b iptBackend) check(s *settings, owner, bridge string) error {
	return b.host.Do(func() error {
		for v6, ips := range families(s) {
			ipt, err := iptutil.New(v6)
			if err != nil {
				return err
			}
			want := map[string][][]string{
				iptBuiltinFwd: {append(iptutil.Comment(commentRules), "-j", iptForward)},
				iptForward:    {append(iptutil.Comment(commentAdmin), "-j", s.admin)},
			}
			if bridge != "" {
				want[iptStage2] = [][]string{policyRule("-o", bridge, "-j", iptTargetDrop)}
			}
			for _, ip := range ips {
				want[iptForward] = append(want[iptForward], addrRules(owner, ip)...)
			}
			if err := iptExpect(ipt, want); err != nil {
				return err
			}
		}
		return nil
	})
}

func iptExpect(ipt *iptables.IPTables, want map[string][][]string) error {
	for _, ch := range nftown.SortedKeys(want) {
		for _, r := range want[ch] {
			ok, err := ipt.Exists(iptFilter, ch, r...)
			if err != nil {
				return fmt.Errorf("checking %s: %w", ch, err)
			}
			if !ok {
				return fmt.Errorf("iptables rule missing in %s: %s", ch, strings.Join(r, " "))
			}
		}
	}
	return nil
}

func (b iptBackend) gc(network string, valid map[string]bool) error {
	prefix := nftown.NetworkPrefix(network)
	return b.locked(func() error {
		var errs []error
		for _, v6 := range []bool{false, true} {
			ipt := iptutil.Usable(v6, iptFilter)
			if ipt == nil {
				continue
			}
			_, err := iptutil.DeleteMatching(ipt, iptFilter, iptForward, func(r string) bool {
				owner := iptutil.CommentOf(r)
				return strings.HasPrefix(owner, prefix) && !valid[owner]
			})
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
}
