package nmstate

import (
	"encoding/binary"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// iflaBrSTPState is IFLA_BR_STP_STATE, which the netlink library's Bridge
// type does not carry; sysfs would show another namespace's bridges when
// knit acts on a namespace it did not mount /sys in, so raw netlink it is.
const iflaBrSTPState = 5

// bridgeSTP reads a bridge's STP state.
func (e *Engine) bridgeSTP(l netlink.Link) (bool, error) {
	var on bool
	err := e.NS.Do(func() error {
		req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_ACK)
		msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
		msg.Index = int32(l.Attrs().Index)
		req.AddData(msg)
		msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if v, ok := findBrAttr(m[unix.SizeofIfInfomsg:], iflaBrSTPState); ok && len(v) >= 4 {
				on = binary.LittleEndian.Uint32(v) != 0
			}
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("reading STP state of %s: %w", l.Attrs().Name, err)
	}
	return on, nil
}

// iflaBrVlanFiltering is IFLA_BR_VLAN_FILTERING (u8). The library's
// BridgeSetVlanFiltering resends every link attribute it read, which the
// kernel refuses on a bridge with ports.
const iflaBrVlanFiltering = 7

// setBridgeSTP switches STP on or off.
func (e *Engine) setBridgeSTP(l netlink.Link, on bool) error {
	v := uint32(0)
	if on {
		v = 1
	}
	if err := e.setBridgeAttr(l, iflaBrSTPState, nl.Uint32Attr(v)); err != nil {
		return fmt.Errorf("setting STP on %s: %w", l.Attrs().Name, err)
	}
	return nil
}

// setVlanFiltering switches a bridge's VLAN filtering on.
func (e *Engine) setVlanFiltering(l netlink.Link) error {
	if err := e.setBridgeAttr(l, iflaBrVlanFiltering, nl.Uint8Attr(1)); err != nil {
		return fmt.Errorf("bridge vlan filtering on %s: %w", l.Attrs().Name, err)
	}
	return nil
}

// setBridgeAttr sends one IFLA_BR_* attribute in an RTM_NEWLINK for l.
func (e *Engine) setBridgeAttr(l netlink.Link, attr int, value []byte) error {
	return e.setInfoData(l, "bridge", attr, value)
}

// setInfoData sends one IFLA_INFO_DATA attribute of kind in an RTM_NEWLINK
// for l, and nothing else: the library's LinkModify always sends the name,
// which kernels before 6.2 refuse with EBUSY on an up device.
func (e *Engine) setInfoData(l netlink.Link, kind string, attr int, value []byte) error {
	return e.NS.Do(func() error {
		req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
		msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
		msg.Index = int32(l.Attrs().Index)
		req.AddData(msg)
		info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
		info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated(kind))
		data := info.AddRtAttr(nl.IFLA_INFO_DATA, nil)
		data.AddRtAttr(attr, value)
		req.AddData(info)
		_, err := req.Execute(unix.NETLINK_ROUTE, 0)
		return err
	})
}

// findBrAttr digs IFLA_LINKINFO → IFLA_INFO_DATA → attr out of a link
// message's attributes.
func findBrAttr(b []byte, attr uint16) ([]byte, bool) {
	attrs, err := nl.ParseRouteAttr(b)
	if err != nil {
		return nil, false
	}
	for _, a := range attrs {
		if a.Attr.Type != unix.IFLA_LINKINFO {
			continue
		}
		info, err := nl.ParseRouteAttr(a.Value)
		if err != nil {
			return nil, false
		}
		for _, i := range info {
			if i.Attr.Type != nl.IFLA_INFO_DATA {
				continue
			}
			data, err := nl.ParseRouteAttr(i.Value)
			if err != nil {
				return nil, false
			}
			for _, d := range data {
				if d.Attr.Type == attr {
					return d.Value, true
				}
			}
		}
	}
	return nil, false
}
