package firewall

import (
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/knit-cni/knit/pkg/hostns"
	"github.com/knit-cni/knit/pkg/nftown"
)

// The nftables layout:
//
//	table inet knit_firewall
//	  set ip4 { ipv4_addr }  set ip6 { ipv6_addr }   container addresses
//	  map iso { ifname : verdict }  set isobr { ifname }
//	  chain forward { filter forward 0; policy accept (admins may set drop)
//	    iifname vmap @iso            ingress policies of bridges
//	    jump admin                   admin chains, before knit's accepts
//	    ip daddr @ip4 ct state established,related accept
//	    ip saddr @ip4 accept         (and ip6) }
//	  chain admin { jump CNI-ADMIN }  chain CNI-ADMIN { ...admin rules... }
//	  chain iso-<br> { oifname "<br>" return (drop: isolated); oifname @isobr drop }
//	  chains o-*, k-*   ownership of the set elements (see nftown)
//
// A container's addresses are set elements, not rules: adding one costs
// the same with 10 or 10,000 others.
//
// An nftables accept ends evaluation only within this table: a host
// firewall that drops forwarded traffic in a table of its own must allow pod
// traffic itself (or use backend "iptables", whose accepts sit in FORWARD).
// knit never flushes or deletes admin chains.
const (
	NftTable     = "knit_firewall"
	chainForward = "forward"
	chainAdmin   = "admin"
	setIP4       = "ip4"
	setIP6       = "ip6"
	mapIso       = "iso"
	setIsoBr     = "isobr"
)

var table = &nftables.Table{Name: NftTable, Family: nftables.TableFamilyINet}

type nftBackend struct {
	host *hostns.Host
	conn *nftables.Conn
	t    *nftown.Table
}

func newNFT(host *hostns.Host) (*nftBackend, error) {
	conn, err := host.NFT()
	if err != nil {
		return nil, err
	}
	return &nftBackend{host: host, conn: conn, t: &nftown.Table{Conn: conn, T: table}}, nil
}

func (b *nftBackend) close(ok bool) { b.host.Release(b.conn, ok) }

// transact runs queue and commits what it queued; when the commit fails
// because the sets no longer matched the ownership records (an admin
// flushed a set), it runs again in careful mode, which reads the sets.
func (b *nftBackend) transact(what string, queue func() error) error {
	err := queue()
	if err == nil {
		err = b.conn.Flush()
	}
	if err != nil && !b.t.Careful && nftown.IsMismatch(err) {
		b.t.Careful = true
		defer func() { b.t.Careful = false }()
		if err = queue(); err == nil {
			err = b.conn.Flush()
		}
	}
	if err != nil {
		return fmt.Errorf("nftables %s: %w", what, err)
	}
	return nil
}

func (b *nftBackend) add(s *settings, owner, bridge string) error {
	unlock, err := b.host.Lock(NftTable)
	if err != nil {
		return err
	}
	defer unlock()
	return b.transact("adding firewall rules", func() error {
		if _, err := b.t.Release(owner); err != nil {
			return err
		}
		if err := b.skeleton(); err != nil {
			return err
		}
		if err := b.ensureAdmin(s.admin); err != nil {
			return err
		}
		if bridge != "" {
			if err := b.isolate(bridge, s.policy == PolicyIsolated); err != nil {
				return err
			}
		}
		return b.t.Claim(owner, ownerElems(s))
	})
}

func sets() []*nftables.Set {
	// Explicit IDs (unique within a transaction): the library would
	// otherwise draw them from a package counter it does not guard, a race
	// for concurrent in-process callers.
	vmap := func(id uint32, name string, key nftables.SetDatatype) *nftables.Set {
		return &nftables.Set{Table: table, ID: id, Name: name, IsMap: true, KeyType: key, DataType: nftables.TypeVerdict}
	}
	return []*nftables.Set{
		{Table: table, ID: 1, Name: setIP4, KeyType: nftables.TypeIPAddr},
		{Table: table, ID: 2, Name: setIP6, KeyType: nftables.TypeIP6Addr},
		vmap(3, mapIso, nftables.TypeIFName),
		{Table: table, ID: 4, Name: setIsoBr, KeyType: nftables.TypeIFName},
	}
}

// skeleton queues the table, maps and chains and rewrites forward's static
// rules in the same transaction.
// layout is the comment of forward's first rule; it changes whenever the
// sets or static rules change shape, so that an upgrade rewrites them.
const layout = "knit firewall v1"

// skeleton queues the table, sets and chains and (re)writes forward's
// static rules in the same transaction — unless they are in place already:
// rewriting them on every ADD would make the kernel revalidate them.
func (b *nftBackend) skeleton() error {
	if !b.t.Careful {
		rules, err := b.t.Rules(chainForward)
		if err != nil {
			return err
		}
		if len(rules) > 0 && nftown.CommentOf(rules[0]) == layout {
			return nil
		}
	}
	c := b.conn
	c.AddTable(table)
	for _, s := range sets() {
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
	}
	// No policy: a new chain accepts, and an admin who set "policy drop"
	// (default-deny for pods, knit's accepts letting theirs through)
	// keeps it.
	fwd := c.AddChain(&nftables.Chain{Name: chainForward, Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter})
	c.AddChain(&nftables.Chain{Name: chainAdmin, Table: table})
	c.FlushChain(fwd)
	rules := [][]expr.Any{
		nftown.LookupIfnameVmap(true, mapIso, 0),
		{nftown.Verdict(expr.VerdictJump, chainAdmin)},
	}
	for _, v4 := range []bool{true, false} {
		set := setIP6
		if v4 {
			set = setIP4
		}
		in := append(nftown.Nfproto(v4), nftown.AddrInSet(v4, false, set)...)
		in = append(append(in, nftown.CtStateEstablishedRelated()...), nftown.Verdict(expr.VerdictAccept, ""))
		out := append(nftown.Nfproto(v4), nftown.AddrInSet(v4, true, set)...)
		rules = append(rules, in, append(out, nftown.Verdict(expr.VerdictAccept, "")))
	}
	for i, e := range rules {
		r := &nftables.Rule{Table: table, Chain: fwd, Exprs: e}
		if i == 0 {
			r.UserData = nftown.Comment(layout)
		}
		c.AddRule(r)
	}
	return nil
}

// ensureAdmin creates the admin chain if missing — never flushing it — and
// makes the admin dispatcher jump to it. Configs may name different admin
// chains, so the jumps accumulate.
func (b *nftBackend) ensureAdmin(admin string) error {
	b.conn.AddChain(&nftables.Chain{Name: admin, Table: table})
	rules, err := b.t.Rules(chainAdmin)
	if err != nil {
		return err
	}
	for _, r := range rules {
		if nftown.JumpTarget(r) == admin {
			return nil
		}
	}
	b.conn.AddRule(&nftables.Rule{Table: table, Chain: &nftables.Chain{Name: chainAdmin, Table: table},
		Exprs: []expr.Any{nftown.Verdict(expr.VerdictJump, admin)}})
	return nil
}

func isoChain(bridge string) string { return "iso-" + bridge }

// isolate (re)writes bridge's ingress policy chain. Traffic from the bridge
// to another policy bridge is dropped; to the bridge itself it passes
// (same-bridge) or is dropped (isolated).
func (b *nftBackend) isolate(bridge string, isolated bool) error {
	self, policy := expr.VerdictReturn, PolicySameBridge
	if isolated {
		self, policy = expr.VerdictDrop, PolicyIsolated
	}
	stamp := layout + " " + policy
	if !b.t.Careful {
		rules, err := b.t.Rules(isoChain(bridge))
		if err != nil {
			return err
		}
		if len(rules) > 0 && nftown.CommentOf(rules[0]) == stamp {
			return nil // in place for this policy
		}
	}
	c := b.conn
	ch := c.AddChain(&nftables.Chain{Name: isoChain(bridge), Table: table})
	c.FlushChain(ch)
	c.AddRule(&nftables.Rule{Table: table, Chain: ch, UserData: nftown.Comment(stamp),
		Exprs: append(nftown.IfName(false, bridge, false), nftown.Verdict(self, ""))})
	c.AddRule(&nftables.Rule{Table: table, Chain: ch,
		Exprs: append(nftown.LookupIfnameSet(false, setIsoBr, 0), nftown.Verdict(expr.VerdictDrop, ""))})
	key := nftown.IfNameKey(bridge)
	if err := c.SetAddElements(&nftables.Set{Table: table, Name: setIsoBr}, []nftables.SetElement{{Key: key}}); err != nil {
		return err
	}
	return c.SetAddElements(&nftables.Set{Table: table, Name: mapIso}, []nftables.SetElement{{Key: key,
		VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: ch.Name}}})
}

// unisolate removes bridge's ingress policy. Callers only do so once the
// bridge is gone: the policy is the bridge's, shared by its containers.
func (b *nftBackend) unisolate(bridge string) error {
	if rules, err := b.t.Rules(isoChain(bridge)); err != nil || len(rules) == 0 {
		return err
	}
	key := nftown.IfNameKey(bridge)
	if err := b.conn.SetDeleteElements(&nftables.Set{Table: table, Name: mapIso}, []nftables.SetElement{{Key: key}}); err != nil {
		return err
	}
	if err := b.conn.SetDeleteElements(&nftables.Set{Table: table, Name: setIsoBr}, []nftables.SetElement{{Key: key}}); err != nil {
		return err
	}
	b.conn.DelChain(&nftables.Chain{Name: isoChain(bridge), Table: table})
	return nil
}

// ownerElems: every address of prevResult, in the set of its family.
func ownerElems(s *settings) []nftown.Elem {
	if s.prev == nil {
		return nil
	}
	var out []nftown.Elem
	for _, ipc := range s.prev.IPs {
		if ip4 := ipc.Address.IP.To4(); ip4 != nil {
			out = append(out, nftown.Elem{Set: setIP4, Key: []byte(ip4)})
		} else if ip6 := ipc.Address.IP.To16(); ip6 != nil {
			out = append(out, nftown.Elem{Set: setIP6, Key: []byte(ip6)})
		}
	}
	return out
}

// del removes owner's rules, and bridge's policy when the bridge is gone.
func (b *nftBackend) del(owner, bridge string) error {
	unlock, err := b.host.Lock(NftTable)
	if err != nil {
		return err
	}
	defer unlock()
	return b.transact("removing firewall rules", func() error {
		if _, err := b.t.Release(owner); err != nil {
			return err
		}
		if bridge != "" && !linkExists(b.host, bridge) {
			return b.unisolate(bridge)
		}
		return nil
	})
}

func linkExists(host *hostns.Host, name string) bool {
	_, err := host.NL.LinkByName(name)
	return err == nil
}

func (b *nftBackend) check(s *settings, owner, bridge string) error {
	fwd, err := b.t.Rules(chainForward)
	if err != nil {
		return err
	}
	if len(fwd) == 0 {
		return fmt.Errorf("nftables chain %s %s is missing or empty", NftTable, chainForward)
	}
	admin, err := b.t.Rules(chainAdmin)
	if err != nil {
		return err
	}
	found := false
	for _, r := range admin {
		found = found || nftown.JumpTarget(r) == s.admin
	}
	if !found {
		return fmt.Errorf("no jump to admin chain %s", s.admin)
	}
	if bridge != "" {
		if rules, err := b.t.Rules(isoChain(bridge)); err != nil || len(rules) == 0 {
			return fmt.Errorf("ingress policy chain %s is missing (%v)", isoChain(bridge), err)
		}
	}
	if elems := ownerElems(s); len(elems) > 0 {
		return b.t.Verify(owner, elems)
	}
	return nil
}

// gc removes network's owners that are not valid and the policies of
// bridges that are gone. The table stays: it holds the admin chains.
func (b *nftBackend) gc(network string, valid map[string]bool) error {
	unlock, err := b.host.Lock(NftTable)
	if err != nil {
		return err
	}
	defer unlock()
	prefix := nftown.NetworkPrefix(network)
	return b.transact("garbage collection", func() error {
		chains, err := b.conn.ListChainsOfTableFamily(table.Family)
		if err != nil {
			return fmt.Errorf("listing chains: %w", err)
		}
		owners, err := b.t.Owners()
		if err != nil {
			return err
		}
		for _, chain := range nftown.SortedKeys(owners) {
			owner := owners[chain]
			if strings.HasPrefix(owner, prefix) && !valid[owner] {
				if _, err := b.t.Release(owner); err != nil {
					return err
				}
			}
		}
		for _, c := range chains {
			br := strings.TrimPrefix(c.Name, "iso-")
			if c.Table.Name == NftTable && br != c.Name && !linkExists(b.host, br) {
				if err := b.unisolate(br); err != nil {
					return err
				}
			}
		}
		return nil
	})
}
