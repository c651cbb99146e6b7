// Package spoofchk drops frames a container sends with a source MAC other
// than its interface's: the bridge plugin's macspoofchk option.
//
// The reference plugin builds, per attachment, a jump from a bridge-family
// prerouting chain to two chains that return for the allowed source MAC and
// drop the rest. knit applies the same filter as one rule per attachment in
// its own bridge table (so it never edits the reference's "nat" table):
//
//	table bridge knit_macspoofchk {
//	    chain prerouting { type filter hook prerouting priority -300; policy accept;
//	        iifname "veth…" ether saddr != 0a:58:… drop comment "knit:…" } }
//
// Rules carry their attachment's tag (nftowner), so DEL and GC find them.
// The functions take an open connection (nftowner.Open), see package masq.
package spoofchk

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

// Names of knit's spoof-check table and chain.
const (
	Table = "knit_macspoofchk"
	Chain = "prerouting"
)

func chain() *nftables.Chain {
	t := &nftables.Table{Family: nftables.TableFamilyBridge, Name: Table}
	return &nftables.Chain{Name: Chain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(-300),
		Policy: policyRef(nftables.ChainPolicyAccept)}
}

// Owned returns the owner comments of the spoof-check rules in the
// namespace behind fd (0: the caller's), none when the table is missing.
func Owned(fd int) ([]string, error) { return nftowner.Comments(fd, chain().Table, Chain) }

func policyRef(p nftables.ChainPolicy) *nftables.ChainPolicy { return &p }

// Setup drops frames entering the bridge from hostIf (the host end of the
// container's veth) whose source MAC is not mac, tagged as o's. It normally
// only adds the rule (see nftowner.Install).
func Setup(ctx context.Context, c *nftables.Conn, o nftowner.Owner, hostIf string, mac net.HardwareAddr) error {
	ch := chain()
	rule := &nftables.Rule{Table: ch.Table, Chain: ch, Exprs: dropExprs(hostIf, mac), UserData: o.UserData()}
	create := func(c *nftables.Conn) {
		c.CreateTable(ch.Table)
		c.AddChain(ch)
	}
	repair := func(c *nftables.Conn) {
		c.AddTable(ch.Table)
		c.AddChain(ch)
	}
	if err := nftowner.Install(ctx, c, []*nftables.Rule{rule}, create, repair); err != nil {
		return fmt.Errorf("adding mac spoof check: %w", err)
	}
	return nil
}

// Teardown removes o's rule; a missing rule, chain or table is fine.
func Teardown(ctx context.Context, c *nftables.Conn, o nftowner.Owner) error {
	if err := nftowner.DeleteOwned(ctx, c, chain(), o); err != nil {
		return fmt.Errorf("removing mac spoof check: %w", err)
	}
	return nil
}

// GC removes the rules of network's attachments not in valid.
func GC(ctx context.Context, c *nftables.Conn, network string, valid []cni.Attachment) error {
	if err := nftowner.DeleteStale(ctx, c, chain(), network, valid); err != nil {
		return fmt.Errorf("collecting mac spoof checks: %w", err)
	}
	return nil
}

// dropExprs: iifname hostIf ether saddr != mac drop.
func dropExprs(hostIf string, mac net.HardwareAddr) []expr.Any {
	name := make([]byte, unix.IFNAMSIZ) // nft compares the zero-padded name
	copy(name, hostIf)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte(mac)},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}
