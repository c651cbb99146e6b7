package portmap

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/knit-cni/knit/pkg/hostns"
	"github.com/knit-cni/knit/pkg/nftown"
)

// The nftables layout. knit uses its own table (the reference's is
// cni_hostport) so the two never rewrite each other's rules. The packet path
// is static: a container's mappings are elements of data maps, never rules,
// so neither a packet nor a commit walks other containers' state.
//
//	table inet knit_hostport
//	  map dn4 / dn4-all / dn4-nosnat      { proto . port : addr . port }   any local address
//	  map dn4-ip / dn4-ip-all / ...       { addr . proto . port : addr . port } hostIP
//	  (and dn6...)                        snat: hairpin/localhost, masqAll, snat=false
//	  set masqall4 / masqall6             { addr . proto . port } DNAT targets of masqAll mappings
//	  chain prerouting  { nat prerouting -100: [conditions] fib daddr type local jump pre-dnat }
//	  chain output      { nat output -100:     [conditions] fib daddr type local jump out-dnat }
//	  chain pre-dnat    { snat maps: mark; dnat ... map @dn* }
//	  chain out-dnat    { snat maps: from 127/8 mark; dnat ... map @dn* }
//	  chain hairpin     { filter prerouting -99: marked but not routed back out
//	                      the input interface: unmark }
//	  chain postrouting { nat postrouting 100: mark masquerade; ct status dnat
//	                      to @masqall masquerade }
//	  chains o-*, k-*   ownership records (see nftown), never reached by packets
//
// Only local destinations are ever translated (fib daddr type local), in
// both hooks: the reference's nftables backend once caught forwarded
// traffic (#1209). Conditions and the mark bit are the table's: the last
// ADD's config sets them for all, as the reference's nftables backend does
// with conditions.
const (
	NftTable   = "knit_hostport"
	chainPre   = "prerouting"
	chainOut   = "output"
	chainPost  = "postrouting"
	chainPreD  = "pre-dnat"
	chainOutD  = "out-dnat"
	chainHairp = "hairpin"
)

// snat modes of a mapping: which map it goes in.
const (
	modeSNAT   = ""        // masquerade hairpin and localhost connections
	modeAll    = "-all"    // masqAll: masquerade every connection
	modeNoSNAT = "-nosnat" // snat: false
)

var modes = []string{modeSNAT, modeAll, modeNoSNAT}

func mapName(v4, hostIP bool, mode string) string {
	n := "dn6"
	if v4 {
		n = "dn4"
	}
	if hostIP {
		n += "-ip"
	}
	return n + mode
}

func masqAllSet(v4 bool) string {
	if v4 {
		return "masqall4"
	}
	return "masqall6"
}

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

func (b *nftBackend) lock() (func(), error) { return b.host.Lock(NftTable) }

// transact runs queue and commits what it queued; when the commit fails
// because the maps no longer matched the ownership records (an admin
// flushed a map), it runs again in careful mode, which reads the maps.
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

// add installs owner's mappings in one transaction, replacing what an
// earlier ADD of the same owner left.
func (b *nftBackend) add(s *settings, owner string, ips contIPs) error {
	unlock, err := b.lock()
	if err != nil {
		return err
	}
	defer unlock()
	return b.transact("adding port mappings", func() error {
		if _, err := b.t.Release(owner); err != nil {
			return err
		}
		if err := b.skeleton(s); err != nil {
			return err
		}
		return b.t.Claim(owner, ownerElems(s, ips))
	})
}

// layoutVersion changes whenever maps or staticRules change shape, so that
// an upgraded plugin rewrites the static rules.
const layoutVersion = 1

// fingerprint identifies the static rules a config produces; the first rule
// of prerouting carries it as its comment.
func fingerprint(s *settings) string {
	var parts []string
	for _, c := range []*[]string{s.ConditionsV4, s.ConditionsV6} {
		if c != nil {
			parts = append(parts, strings.Join(*c, " "))
		} else {
			parts = append(parts, "")
		}
	}
	h := sha256.Sum256([]byte(fmt.Sprintf("%d\x00%d\x00%s", layoutVersion, s.markBit, strings.Join(parts, "\x00"))))
	return "knit portmap " + hex.EncodeToString(h[:8])
}

// skeleton queues the table, maps and chains and (re)writes the static
// rules, in the same transaction so packets never see them missing —
// unless they are in place already for this config: rewriting them would
// cost ~45 rules per ADD and make the kernel revalidate them.
func (b *nftBackend) skeleton(s *settings) error {
	fp := fingerprint(s)
	if !b.t.Careful {
		rules, err := b.t.Rules(chainPre)
		if err != nil {
			return err
		}
		if len(rules) > 0 && nftown.CommentOf(rules[0]) == fp {
			return nil
		}
	}
	c := b.conn
	c.AddTable(table)
	for _, m := range maps() {
		if err := c.AddSet(m, nil); err != nil {
			return fmt.Errorf("map %s: %w", m.Name, err)
		}
	}
	nat, filter := nftables.ChainTypeNAT, nftables.ChainTypeFilter
	hairpinPrio := *nftables.ChainPriorityNATDest + 1
	// Jump targets first: a rule may only name chains that exist.
	base := []*nftables.Chain{
		{Name: chainPreD}, {Name: chainOutD},
		{Name: chainPre, Type: nat, Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest},
		{Name: chainOut, Type: nat, Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest},
		{Name: chainHairp, Type: filter, Hooknum: nftables.ChainHookPrerouting, Priority: &hairpinPrio},
		{Name: chainPost, Type: nat, Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource},
	}
	bit := uint32(1) << s.markBit
	for _, ch := range base {
		ch.Table = table
		c.FlushChain(c.AddChain(ch))
		for i, e := range staticRules(s, ch.Name, bit) {
			r := &nftables.Rule{Table: table, Chain: ch, Exprs: e}
			if ch.Name == chainPre && i == 0 {
				r.UserData = nftown.Comment(fp)
			}
			c.AddRule(r)
		}
	}
	return nil
}

// maps are the DNAT maps and masqAll sets, with explicit IDs (unique within
// a transaction): the library would otherwise draw them from a package
// counter it does not guard, a race for concurrent in-process callers.
func maps() []*nftables.Set {
	var out []*nftables.Set
	id := uint32(0)
	for _, v4 := range []bool{true, false} {
		addr := nftables.TypeIP6Addr
		if v4 {
			addr = nftables.TypeIPAddr
		}
		val := nftables.MustConcatSetType(addr, nftables.TypeInetService)
		for _, hostIP := range []bool{true, false} {
			key := []nftables.SetDatatype{nftables.TypeInetProto, nftables.TypeInetService}
			if hostIP {
				key = append([]nftables.SetDatatype{addr}, key...)
			}
			for _, mode := range modes {
				id++
				out = append(out, &nftables.Set{Table: table, ID: id, Name: mapName(v4, hostIP, mode), IsMap: true,
					Concatenation: true, KeyType: nftables.MustConcatSetType(key...), DataType: val})
			}
		}
		id++
		out = append(out, &nftables.Set{Table: table, ID: id, Name: masqAllSet(v4), Concatenation: true,
			KeyType: nftables.MustConcatSetType(addr, nftables.TypeInetProto, nftables.TypeInetService)})
	}
	return out
}

// staticRules are a base or dispatch chain's rules.
func staticRules(s *settings, chain string, bit uint32) [][]expr.Any {
	var out [][]expr.Any
	for _, v4 := range []bool{true, false} {
		fam := nftown.Nfproto(v4)
		cond := s.cond[1]
		if v4 {
			cond = s.cond[0]
		}
		switch chain {
		case chainPre, chainOut:
			target := chainPreD
			if chain == chainOut {
				target = chainOutD
			}
			out = append(out, cat(fam, cond, nftown.FibDaddrLocal(), []expr.Any{nftown.Verdict(expr.VerdictJump, target)}))
		case chainPreD, chainOutD:
			out = append(out, dnatRules(v4, chain == chainOutD, bit)...)
		case chainPost:
			out = append(out, cat(fam, nftown.CtStatusDNAT(), nftown.PortKeyExprs(v4, true),
				[]expr.Any{nftown.InSet(masqAllSet(v4)), &expr.Masq{}}))
		}
	}
	switch chain {
	case chainHairp:
		// Marked in pre-dnat, kept only when the connection goes back out
		// where it came in (a container reaching its own or a neighbour's
		// host port on its bridge): other clients keep their address.
		out = append(out, cat(nftown.Mark(bit, bit, false), nftown.FibDaddrViaIif(), nftown.CmpZero(), nftown.ClearMarkBits(bit)))
	case chainPost:
		out = append(out, cat(nftown.Mark(bit, bit, false), []expr.Any{&expr.Masq{}}))
	}
	return out
}

// dnatRules translate by the maps of one family, hostIP maps first. Maps of
// the default snat mode mark their connections for masquerading first: in
// prerouting all of them (the hairpin chain then unmarks the ones that are
// not hairpins), in output those from 127/8.
func dnatRules(v4, output bool, bit uint32) [][]expr.Any {
	var out [][]expr.Any
	for _, hostIP := range []bool{true, false} {
		key := nftown.PortKeyExprs(v4, hostIP)
		for _, mode := range modes {
			m := mapName(v4, hostIP, mode)
			if mode == modeSNAT && (!output || v4) {
				var src []expr.Any
				if output {
					src = nftown.Addr(true, loopback4, false)
				}
				out = append(out, cat(nftown.Nfproto(v4), src, key, []expr.Any{nftown.InSet(m)}, nftown.SetMarkBits(bit)))
			}
			out = append(out, cat(nftown.Nfproto(v4), key, nftown.DNATMap(v4, m)))
		}
	}
	return out
}

func cat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

var loopback4 = &net.IPNet{IP: net.IPv4(127, 0, 0, 0).To4(), Mask: net.CIDRMask(8, 32)}

// ownerElems are a container's map elements: per mapping and address
// family its DNAT target, and for masqAll the target in the masqAll set.
func ownerElems(s *settings, ips contIPs) []nftown.Elem {
	mode := modeSNAT
	switch {
	case !s.snat:
		mode = modeNoSNAT
	case s.MasqAll:
		mode = modeAll
	}
	var out []nftown.Elem
	for _, m := range s.maps {
		for fi, cip := range []*net.IPNet{ips.v4, ips.v6} {
			v4 := fi == 0
			if cip == nil || (v4 && !m.family4) || (!v4 && !m.family6) {
				continue
			}
			key := nftown.PortKey(m.proto, m.hostPort)
			if m.hostIP != nil {
				key = nftown.AddrPortKey(m.hostIP, m.proto, m.hostPort)
			}
			out = append(out, nftown.Elem{Set: mapName(v4, m.hostIP != nil, mode), Key: key,
				Data: nftown.AddrPortValue(cip.IP, m.containerPort)})
			if mode == modeAll {
				out = append(out, nftown.Elem{Set: masqAllSet(v4), Key: nftown.AddrPortKey(cip.IP, m.proto, m.containerPort)})
			}
		}
	}
	return out
}

// del removes owner's mappings. A missing table or owner is success.
func (b *nftBackend) del(owner string) error {
	unlock, err := b.lock()
	if err != nil {
		return err
	}
	defer unlock()
	return b.transact("removing port mappings", func() error {
		_, err := b.t.Release(owner)
		return err
	})
}

// check verifies the static chains and owner's elements.
func (b *nftBackend) check(s *settings, owner string, ips contIPs) error {
	for _, ch := range []string{chainPre, chainOut, chainPreD, chainOutD, chainPost} {
		rules, err := b.t.Rules(ch)
		if err != nil {
			return err
		}
		if len(rules) == 0 {
			return fmt.Errorf("nftables chain %s %s is missing or empty", NftTable, ch)
		}
	}
	if err := b.t.Verify(owner, ownerElems(s, ips)); err != nil {
		return fmt.Errorf("port mappings: %w", err)
	}
	return nil
}

// gc releases the owners of network that are not in valid, and deletes the
// whole table once no owner of any network is left.
func (b *nftBackend) gc(network string, valid map[string]bool) error {
	unlock, err := b.lock()
	if err != nil {
		return err
	}
	defer unlock()
	return b.transact("garbage collection", func() error {
		owners, err := b.t.Owners()
		if err != nil {
			return err
		}
		left := len(owners)
		prefix := nftown.NetworkPrefix(network)
		for _, chain := range nftown.SortedKeys(owners) {
			owner := owners[chain]
			if !strings.HasPrefix(owner, prefix) || valid[owner] {
				continue
			}
			if _, err := b.t.Release(owner); err != nil {
				return err
			}
			left--
		}
		if left == 0 {
			if ok, err := b.t.Exists(chainPre); err == nil && ok {
				b.conn.DelTable(table)
			}
		}
		return nil
	})
}
