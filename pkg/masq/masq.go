// Package masq masquerades traffic from container addresses with nftables,
// the ipMasq option of the bridge and ptp plugins.
//
// Like the reference plugins, traffic from a container address to anything
// outside the address's subnet, except multicast, is masqueraded. Everything
// lives in one inet table, knit_masq:
//
//	chain postrouting { type nat hook postrouting priority srcnat;
//	    ip daddr 224.0.0.0/4 return; ip6 daddr ff00::/8 return; goto masq_checks }
//	chain masq_checks { ip saddr 10.1.0.5 ip daddr != 10.1.0.0/24 masquerade comment "knit:…" … }
//
// Each masq_checks rule carries its attachment's tag (see nftowner), so DEL
// and GC remove exactly the rules of one attachment without knowing its
// addresses. Setup normally only adds rules (see nftowner.Install); it
// creates the table when missing and repairs it when a chain is gone.
//
// The functions take an open connection (nftowner.Open) so that callers can
// close it after their own slow steps: removing rules makes the close wait
// for the kernel to free them.
package masq

import (
	"context"
	"fmt"
	"net"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/nftowner"
)

// Names of knit's masquerade table and chains.
const (
	Table       = "knit_masq"
	PostChain   = "postrouting"
	ChecksChain = "masq_checks"
)

func table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: Table}
}

// Owned returns the owner comments of the masquerade rules in the
// namespace behind fd (0: the caller's), none when the table is missing.
func Owned(fd int) ([]string, error) { return nftowner.Comments(fd, table(), ChecksChain) }

func checksChain(t *nftables.Table) *nftables.Chain {
	return &nftables.Chain{Name: ChecksChain, Table: t}
}

func postChain(t *nftables.Table) *nftables.Chain {
	return &nftables.Chain{Name: PostChain, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource}
}

// Setup masquerades traffic from each of addrs (container address with its
// subnet's prefix length) leaving its subnet, tagged as o's.
func Setup(ctx context.Context, c *nftables.Conn, o nftowner.Owner, addrs []net.IPNet) error {
	if len(addrs) == 0 {
		return nil
	}
	t := table()
	checks, post := checksChain(t), postChain(t)
	ud := o.UserData()
	rules := make([]*nftables.Rule, 0, len(addrs))
	for _, a := range addrs {
		rules = append(rules, &nftables.Rule{Table: t, Chain: checks, Exprs: masqExprs(a), UserData: ud})
	}
	create := func(c *nftables.Conn) {
		c.CreateTable(t)
		c.AddChain(checks)
		c.AddChain(post)
		for _, r := range postRules(post, checks) {
			c.AddRule(r)
		}
	}
	repair := func(c *nftables.Conn) {
		c.AddTable(t)
		c.AddChain(checks)
		c.AddChain(post)
		c.FlushChain(post)
		for _, r := range postRules(post, checks) {
			c.AddRule(r)
		}
	}
	if err := nftowner.Install(ctx, c, rules, create, repair); err != nil {
		return fmt.Errorf("adding masquerade rules: %w", err)
	}
	return nil
}

// Teardown removes o's rules; missing rules, chains or table are fine.
func Teardown(ctx context.Context, c *nftables.Conn, o nftowner.Owner) error {
	if err := nftowner.DeleteOwned(ctx, c, checksChain(table()), o); err != nil {
		return fmt.Errorf("removing masquerade rules: %w", err)
	}
	return nil
}

// GC removes the rules of network's attachments not in valid.
func GC(ctx context.Context, c *nftables.Conn, network string, valid []cni.Attachment) error {
	if err := nftowner.DeleteStale(ctx, c, checksChain(table()), network, valid); err != nil {
		return fmt.Errorf("collecting masquerade rules: %w", err)
	}
	return nil
}

// postRules skips multicast and sends everything else to masq_checks.
func postRules(post, checks *nftables.Chain) []*nftables.Rule {
	mc4 := net.IPNet{IP: net.IPv4(224, 0, 0, 0).To4(), Mask: net.CIDRMask(4, 32)}
	mc6 := net.IPNet{IP: net.ParseIP("ff00::"), Mask: net.CIDRMask(8, 128)}
	ret := &expr.Verdict{Kind: expr.VerdictReturn}
	return []*nftables.Rule{
		{Table: post.Table, Chain: post, Exprs: concat(family(mc4.IP), daddrIn(mc4, expr.CmpOpEq), ret)},
		{Table: post.Table, Chain: post, Exprs: concat(family(mc6.IP), daddrIn(mc6, expr.CmpOpEq), ret)},
		{Table: post.Table, Chain: post, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictGoto, Chain: checks.Name}}},
	}
}

// masqExprs: ip saddr A ip daddr != A's subnet masquerade.
func masqExprs(a net.IPNet) []expr.Any {
	src, _ := offsets(a.IP)
	ip := normalize(a.IP)
	saddr := []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: src, Len: uint32(len(ip))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ip},
	}
	return concat(family(a.IP), saddr, daddrIn(a, expr.CmpOpNeq), &expr.Masq{})
}

// concat joins expression lists and single expressions into one rule body.
func concat(parts ...any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		switch v := p.(type) {
		case []expr.Any:
			out = append(out, v...)
		case expr.Any:
			out = append(out, v)
		}
	}
	return out
}

// daddrIn matches the destination address against n (op Eq: inside,
// Neq: outside); the family match must precede it.
func daddrIn(n net.IPNet, op expr.CmpOp) []expr.Any {
	ip := normalize(n.IP)
	_, dst := offsets(n.IP)
	mask := make([]byte, len(ip))
	copy(mask, n.Mask[len(n.Mask)-len(ip):])
	netw := make([]byte, len(ip))
	for i := range ip {
		netw[i] = ip[i] & mask[i]
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: dst, Len: uint32(len(ip))},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(len(ip)), Mask: mask, Xor: make([]byte, len(ip))},
		&expr.Cmp{Op: op, Register: 1, Data: netw},
	}
}

// family matches the packet's protocol family (required for address
// payloads in an inet table).
func family(ip net.IP) []expr.Any {
	p := byte(unix.NFPROTO_IPV6)
	if ip.To4() != nil {
		p = unix.NFPROTO_IPV4
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

// offsets are the source and destination address offsets in the header.
func offsets(ip net.IP) (src, dst uint32) {
	if ip.To4() != nil {
		return 12, 16
	}
	return 8, 24
}

func normalize(ip net.IP) net.IP {
	if v4 := ip.To4(); v4 != nil {
		return v4
	}
	return ip.To16()
}
