package nftown

import (
	"encoding/binary"
	"net"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Register numbers: reg 1 is the first 16-byte register; concatenated keys
// continue in the 4-byte registers after NFT_REG32_00 (8), as nft lays them
// out.
const (
	reg1    = 1
	reg2    = 2
	reg32_1 = 9 // second 4-byte word of reg 1
	reg32_2 = 10
	reg32_4 = 12 // fifth 4-byte word: after an IPv6 address
	reg32_5 = 13
)

// Nfproto matches the packet's family (inet tables see both).
func Nfproto(v4 bool) []expr.Any {
	p := byte(unix.NFPROTO_IPV6)
	if v4 {
		p = unix.NFPROTO_IPV4
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{p}},
	}
}

// Addr matches the source (src) or destination address against a prefix;
// neq inverts the match. The caller matches the family first.
func Addr(src bool, n *net.IPNet, neq bool) []expr.Any {
	ip, off := n.IP.To4(), uint32(16)
	if src {
		off = 12
	}
	if ip == nil {
		ip, off = n.IP.To16(), 24
		if src {
			off = 8
		}
	}
	mask := net.IPMask(n.Mask)
	if len(mask) != len(ip) {
		mask = net.CIDRMask(len(ip)*8, len(ip)*8)
	}
	op := expr.CmpOpEq
	if neq {
		op = expr.CmpOpNeq
	}
	out := []expr.Any{&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(len(ip))}}
	if ones, bits := mask.Size(); ones != bits {
		out = append(out, &expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: uint32(len(ip)),
			Mask: []byte(mask), Xor: make([]byte, len(ip))})
	}
	return append(out, &expr.Cmp{Op: op, Register: reg1, Data: []byte(ip.Mask(mask))})
}

// IfName matches the input (in) or output interface name. A trailing '*'
// matches the prefix, as in nft and iptables.
func IfName(in bool, name string, neq bool) []expr.Any {
	key := expr.MetaKeyOIFNAME
	if in {
		key = expr.MetaKeyIIFNAME
	}
	op := expr.CmpOpEq
	if neq {
		op = expr.CmpOpNeq
	}
	data := IfNameKey(name)
	if l := len(name); l > 0 && name[l-1] == '*' {
		data = []byte(name[:l-1])
	}
	return []expr.Any{
		&expr.Meta{Key: key, Register: reg1},
		&expr.Cmp{Op: op, Register: reg1, Data: data},
	}
}

// IfNameKey lays out an interface name as the kernel compares it and as
// ifname-typed set keys hold it: NUL-padded to IFNAMSIZ.
func IfNameKey(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// Mark matches the packet mark: (mark & mask) op value.
func Mark(value, mask uint32, neq bool) []expr.Any {
	op := expr.CmpOpEq
	if neq {
		op = expr.CmpOpNeq
	}
	out := []expr.Any{&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1}}
	if mask != 0xffffffff {
		out = append(out, &expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binary.NativeEndian.AppendUint32(nil, mask), Xor: make([]byte, 4)})
	}
	return append(out, &expr.Cmp{Op: op, Register: reg1, Data: binary.NativeEndian.AppendUint32(nil, value&mask)})
}

// ClearMarkBits clears bits of the packet mark.
func ClearMarkBits(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binary.NativeEndian.AppendUint32(nil, ^bits), Xor: make([]byte, 4)},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1, SourceRegister: true},
	}
}

// SetMarkBits ORs bits into the packet mark (meta mark set mark | bits).
func SetMarkBits(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binary.NativeEndian.AppendUint32(nil, ^bits), Xor: binary.NativeEndian.AppendUint32(nil, bits)},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1, SourceRegister: true},
	}
}

// FibDaddrLocal matches packets addressed to a local address of this host
// (fib daddr type local) — hostport DNAT must never catch traffic the host
// merely forwards.
func FibDaddrLocal() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: reg1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binary.NativeEndian.AppendUint32(nil, unix.RTN_LOCAL)},
	}
}

// CtStateEstablishedRelated matches ct state established,related.
func CtStateEstablishedRelated() []expr.Any {
	bits := uint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED)
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binary.NativeEndian.AppendUint32(nil, bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
	}
}

// Verdict ends a rule with kind (accept, drop, return) or a jump to chain.
func Verdict(kind expr.VerdictKind, chain string) expr.Any {
	return &expr.Verdict{Kind: kind, Chain: chain}
}

// PortKey is the key of an inet_proto . inet_service set.
func PortKey(proto byte, port uint16) []byte {
	k := make([]byte, 8)
	k[0] = proto
	binary.BigEndian.PutUint16(k[4:], port)
	return k
}

// AddrPortKey is the key of an ipv4_addr/ipv6_addr . inet_proto .
// inet_service set.
func AddrPortKey(ip net.IP, proto byte, port uint16) []byte {
	return append(addrBytes(ip), PortKey(proto, port)...)
}

// AddrPortValue is the value of an ipv4_addr/ipv6_addr . inet_service map
// (a DNAT target).
func AddrPortValue(ip net.IP, port uint16) []byte {
	v := make([]byte, 4)
	binary.BigEndian.PutUint16(v, port)
	return append(addrBytes(ip), v...)
}

func addrBytes(ip net.IP) []byte {
	if a := ip.To4(); a != nil {
		return append([]byte(nil), a...)
	}
	return append([]byte(nil), ip.To16()...)
}

// PortKeyExprs load the packet's meta l4proto . th dport (or, with
// withAddr, ip(6) daddr . meta l4proto . th dport) into reg 1 onwards.
func PortKeyExprs(v4, withAddr bool) []expr.Any {
	if !withAddr {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
			&expr.Payload{DestRegister: reg32_1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		}
	}
	off, l, protoReg, portReg := uint32(16), uint32(4), uint32(reg32_1), uint32(reg32_2)
	if !v4 {
		off, l, protoReg, portReg = 24, 16, reg32_4, reg32_5
	}
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: l},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: protoReg},
		&expr.Payload{DestRegister: portReg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
}

// InSet matches when the key loaded into reg 1 onwards is in the named set
// or map.
func InSet(set string) expr.Any {
	return &expr.Lookup{SourceRegister: reg1, SetName: set}
}

// DNATMap rewrites the destination to the address . port the named map
// holds for the key in reg 1 onwards (dnat ip/ip6 to KEY map @set); a key
// the map lacks ends the rule.
func DNATMap(v4 bool, set string) []expr.Any {
	fam, portReg := uint32(unix.NFPROTO_IPV4), uint32(reg32_1)
	if !v4 {
		fam, portReg = unix.NFPROTO_IPV6, reg2
	}
	return []expr.Any{
		&expr.Lookup{SourceRegister: reg1, SetName: set, DestRegister: reg1, IsDestRegSet: true},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: fam, RegAddrMin: reg1, RegProtoMin: portReg, Specified: true},
	}
}

// AddrInSet matches the source or destination address against a named
// set of addresses.
func AddrInSet(v4, src bool, set string) []expr.Any {
	off, l := uint32(16), uint32(4)
	if src {
		off = 12
	}
	if !v4 {
		off, l = 24, 16
		if src {
			off = 8
		}
	}
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: l},
		InSet(set),
	}
}

// FibDaddrViaIif loads whether the packet's (translated) destination is
// routed out of the interface it came in by — a hairpin — into reg 1 (fib
// daddr . iif oif present): zero when it is not (CmpZero).
func FibDaddrViaIif() []expr.Any {
	return []expr.Any{&expr.Fib{Register: reg1, FlagDADDR: true, FlagIIF: true, ResultOIF: true, FlagPRESENT: true}}
}

// CmpZero matches when reg 1 holds zero.
func CmpZero() []expr.Any {
	return []expr.Any{&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: make([]byte, 4)}}
}

// ipsDstNAT is IPS_DST_NAT of ct status (bit 5).
const ipsDstNAT = 1 << 5

// CtStatusDNAT matches connections whose destination was translated.
func CtStatusDNAT() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binary.NativeEndian.AppendUint32(nil, ipsDstNAT), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
	}
}

// LookupIfnameVmap dispatches on the input or output interface name.
func LookupIfnameVmap(in bool, set string, id uint32) []expr.Any {
	key := expr.MetaKeyOIFNAME
	if in {
		key = expr.MetaKeyIIFNAME
	}
	return []expr.Any{
		&expr.Meta{Key: key, Register: reg1},
		&expr.Lookup{SourceRegister: reg1, SetName: set, SetID: id, DestRegister: 0, IsDestRegSet: true},
	}
}

// LookupIfnameSet matches the input or output interface name against a
// set (oifname @set).
func LookupIfnameSet(in bool, set string, id uint32) []expr.Any {
	key := expr.MetaKeyOIFNAME
	if in {
		key = expr.MetaKeyIIFNAME
	}
	return []expr.Any{
		&expr.Meta{Key: key, Register: reg1},
		&expr.Lookup{SourceRegister: reg1, SetName: set, SetID: id},
	}
}
