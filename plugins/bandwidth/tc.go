package bandwidth

import (
	"errors"
	"fmt"
	"net"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/link"
	"github.com/knit-cni/knit/pkg/nlsafe"
)

// The qdisc handles the reference uses: 1: for the TBF, ffff: for ingress.
const (
	tbfHandle     uint32 = 1 << 16
	ingressHandle uint32 = 0xffff << 16
)

// shaper installs and removes one attachment's shaping: h is the host
// namespace, host the host veth (nil when gone), ifb the ifb's name and
// o the attachment, recorded in the ifb's alias.
type shaper struct {
	h    *netlink.Handle
	host netlink.Link
	ifb  string
	o    owner
}

// tbf is the token bucket for a rate and burst in bits.
func tbf(linkIndex int, rateBits, burstBits uint64) *netlink.Tbf {
	rate, burst := rateBits/8, burstBits/8
	buffer, _ := bufferTicks(rate, burst) // validated with the config
	return &netlink.Tbf{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: linkIndex, Handle: tbfHandle, Parent: netlink.HANDLE_ROOT},
		Rate:       rate,
		Buffer:     buffer,
		Limit:      limitBytes(rate, burst),
	}
}

// install sets up the limits; it returns the ifb for the result when
// egress is limited.
func (s *shaper) install(lim *Entry) (*current.Interface, error) {
	if lim.IngressRate > 0 {
		if err := s.h.QdiscReplace(tbf(s.host.Attrs().Index, lim.IngressRate, lim.IngressBurst)); err != nil {
			return nil, fmt.Errorf("adding ingress TBF on %s: %w", s.host.Attrs().Name, err)
		}
	}
	if lim.EgressRate == 0 {
		return nil, nil
	}
	ifb, err := s.addIfb()
	if err != nil {
		return nil, err
	}
	if err := s.redirect(ifb); err != nil {
		return nil, err
	}
	if err := s.h.QdiscReplace(tbf(ifb.Attrs().Index, lim.EgressRate, lim.EgressBurst)); err != nil {
		return nil, fmt.Errorf("adding egress TBF on %s: %w", s.ifb, err)
	}
	return &current.Interface{Name: s.ifb, Mac: ifb.Attrs().HardwareAddr.String()}, nil
}

// addIfb creates the ifb with the host veth's MTU and queue length, or
// takes over the one an earlier ADD of the same attachment made.
func (s *shaper) addIfb() (netlink.Link, error) {
	ha := s.host.Attrs()
	if l, err := s.h.LinkByName(s.ifb); err == nil {
		if !s.owns(l) {
			return nil, fmt.Errorf("ifb %s exists and belongs to someone else (alias %q)", s.ifb, l.Attrs().Alias)
		}
		return l, nil
	}
	ifb := &netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: s.ifb, MTU: ha.MTU, TxQLen: ha.TxQLen, Flags: net.FlagUp}}
	if err := s.h.LinkAdd(ifb); err != nil {
		return nil, fmt.Errorf("creating ifb %s: %w", s.ifb, err)
	}
	l, err := s.h.LinkByName(s.ifb)
	if err != nil {
		return nil, fmt.Errorf("finding new ifb %s: %w", s.ifb, err)
	}
	if err := s.h.LinkSetAlias(l, s.o.alias()); err != nil {
		return nil, fmt.Errorf("labelling ifb %s: %w", s.ifb, err)
	}
	if err := s.h.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("setting ifb %s up: %w", s.ifb, err)
	}
	return l, nil
}

// redirect sends everything the host veth receives (the container's
// egress) to the ifb: an ingress qdisc with a match-all u32 filter and a
// mirred redirect.
func (s *shaper) redirect(ifb netlink.Link) error {
	hi := s.host.Attrs().Index
	ingress := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: hi, Handle: ingressHandle, Parent: netlink.HANDLE_INGRESS}}
	if err := s.h.QdiscReplace(ingress); err != nil {
		return fmt.Errorf("adding ingress qdisc on %s: %w", s.host.Attrs().Name, err)
	}
	filter := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: hi, Parent: ingressHandle, Priority: 1, Protocol: unix.ETH_P_ALL},
		ClassId:     netlink.MakeHandle(1, 1),
		Actions:     []netlink.Action{netlink.NewMirredAction(ifb.Attrs().Index)},
	}
	if err := s.h.FilterReplace(filter); err != nil {
		return fmt.Errorf("redirecting %s to %s: %w", s.host.Attrs().Name, s.ifb, err)
	}
	return nil
}

// owns reports whether l is this attachment's ifb. An ifb without an alias
// is one whose labelling failed half-way through an ADD.
func (s *shaper) owns(l netlink.Link) bool {
	if l.Type() != "ifb" {
		return false
	}
	got, ok := parseAlias(l.Attrs().Alias)
	return (ok && got == s.o) || l.Attrs().Alias == ""
}

// remove deletes the ifb and the host veth's qdiscs; what is gone is fine,
// and a link with the ifb's name that is not ours is left alone.
func (s *shaper) remove() error {
	var errs []error
	if l, err := s.h.LinkByName(s.ifb); err == nil && s.owns(l) {
		errs = append(errs, link.DelByName(s.h, s.ifb))
	}
	if s.host == nil {
		return errors.Join(errs...)
	}
	qdiscs, err := nlsafe.QdiscList(s.h, s.host)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("listing qdiscs of %s: %w", s.host.Attrs().Name, err))...)
	}
	for _, q := range qdiscs {
		a := q.Attrs()
		_, isTbf := q.(*netlink.Tbf)
		_, isIngress := q.(*netlink.Ingress)
		if (isTbf && a.Parent == netlink.HANDLE_ROOT && a.Handle == tbfHandle) || (isIngress && a.Handle == ingressHandle) {
			if err := s.h.QdiscDel(q); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
				errs = append(errs, fmt.Errorf("deleting qdisc on %s: %w", s.host.Attrs().Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// check compares the installed shaping with the limits.
func (s *shaper) check(lim *Entry) error {
	if lim.IngressRate > 0 {
		if err := s.checkTbf(s.host, lim.IngressRate, lim.IngressBurst); err != nil {
			return err
		}
	}
	if lim.EgressRate == 0 {
		return nil
	}
	ifb, err := s.h.LinkByName(s.ifb)
	if err != nil {
		return fmt.Errorf("ifb %s: %w", s.ifb, err)
	}
	if err := s.checkTbf(ifb, lim.EgressRate, lim.EgressBurst); err != nil {
		return err
	}
	return s.checkRedirect(ifb.Attrs().Index)
}

func (s *shaper) checkTbf(l netlink.Link, rateBits, burstBits uint64) error {
	want := tbf(l.Attrs().Index, rateBits, burstBits)
	qdiscs, err := nlsafe.QdiscList(s.h, l)
	if err != nil {
		return fmt.Errorf("listing qdiscs of %s: %w", l.Attrs().Name, err)
	}
	for _, q := range qdiscs {
		got, ok := q.(*netlink.Tbf)
		if !ok || got.Parent != netlink.HANDLE_ROOT {
			continue
		}
		if got.Rate != want.Rate || got.Buffer != want.Buffer || got.Limit != want.Limit {
			return fmt.Errorf("TBF on %s is rate %d B/s buffer %d limit %d, want %d/%d/%d",
				l.Attrs().Name, got.Rate, got.Buffer, got.Limit, want.Rate, want.Buffer, want.Limit)
		}
		return nil
	}
	return fmt.Errorf("no TBF root qdisc on %s", l.Attrs().Name)
}

func (s *shaper) checkRedirect(ifbIndex int) error {
	filters, err := nlsafe.FilterList(s.h, s.host, ingressHandle)
	if err != nil {
		return fmt.Errorf("listing ingress filters of %s: %w", s.host.Attrs().Name, err)
	}
	for _, f := range filters {
		u, ok := f.(*netlink.U32)
		if !ok {
			continue
		}
		for _, a := range u.Actions {
			if m, ok := a.(*netlink.MirredAction); ok && m.Ifindex == ifbIndex && m.MirredAction == netlink.TCA_EGRESS_REDIR {
				return nil
			}
		}
	}
	return fmt.Errorf("no redirect from %s to %s", s.host.Attrs().Name, s.ifb)
}
