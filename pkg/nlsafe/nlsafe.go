// Package nlsafe wraps the netlink dumps knit makes so that a dump the
// kernel interrupted is retried. A dump that races a change (an address
// added while the list is read, which happens as a new link comes up) ends
// with NLM_F_DUMP_INTR; the library then returns what it read together
// with netlink.ErrDumpInterrupted, and the list may be incomplete. Like the
// reference plugins' netlinksafe, these retry a few times and return the
// error only if every attempt was interrupted.
package nlsafe

import (
	"errors"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
)

// attempts bounds the retries: interruptions come from a burst of changes,
// not from a steady stream.
const attempts = 10

func retry[T any](dump func() (T, error)) (T, error) {
	var v T
	var err error
	for range attempts {
		if v, err = dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

// LinkList is h.LinkList, retried when interrupted.
func LinkList(h *netlink.Handle) ([]netlink.Link, error) {
	return retry(h.LinkList)
}

// AddrList is h.AddrList, retried when interrupted.
func AddrList(h *netlink.Handle, l netlink.Link, family int) ([]netlink.Addr, error) {
	return retry(func() ([]netlink.Addr, error) { return h.AddrList(l, family) })
}

// RouteList is h.RouteList, retried when interrupted.
func RouteList(h *netlink.Handle, l netlink.Link, family int) ([]netlink.Route, error) {
	return retry(func() ([]netlink.Route, error) { return h.RouteList(l, family) })
}

// RouteListFiltered is h.RouteListFiltered, retried when interrupted.
func RouteListFiltered(h *netlink.Handle, family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	return retry(func() ([]netlink.Route, error) { return h.RouteListFiltered(family, filter, mask) })
}

// RuleList is h.RuleList, retried when interrupted.
func RuleList(h *netlink.Handle, family int) ([]netlink.Rule, error) {
	return retry(func() ([]netlink.Rule, error) { return h.RuleList(family) })
}

// BridgeVlanList is h.BridgeVlanList, retried when interrupted.
func BridgeVlanList(h *netlink.Handle) (map[int32][]*nl.BridgeVlanInfo, error) {
	return retry(h.BridgeVlanList)
}

// QdiscList is h.QdiscList, retried when interrupted.
func QdiscList(h *netlink.Handle, l netlink.Link) ([]netlink.Qdisc, error) {
	return retry(func() ([]netlink.Qdisc, error) { return h.QdiscList(l) })
}

// FilterList is h.FilterList, retried when interrupted.
func FilterList(h *netlink.Handle, l netlink.Link, parent uint32) ([]netlink.Filter, error) {
	return retry(func() ([]netlink.Filter, error) { return h.FilterList(l, parent) })
}
