package main

import (
	"log/slog"

	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/netns"
	"github.com/knit-cni/knit/pkg/nmstate"
)

// newDHCP returns the DHCP client for ipv4.dhcp: true. Until knit's DHCP
// client is wired in, nil makes such policies fail with a clear reason.
func newDHCP(ns *netns.NS, h *netlink.Handle, log *slog.Logger) nmstate.DHCPClient { return nil }
