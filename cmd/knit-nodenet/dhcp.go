package main

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/dhcpclient"
	"github.com/knit-cni/knit/pkg/netns"
)

// newDHCP returns knit's DHCP client for ipv4.dhcp: true on the node's
// interfaces. Its leases are renewed until ctx (the agent's life) ends;
// the addresses then stay, and the next agent adopts them.
func newDHCP(ctx context.Context, ns *netns.NS, h *netlink.Handle, nodeName string, timeout time.Duration, log *slog.Logger) *dhcpclient.Node {
	host, _, _ := strings.Cut(nodeName, ".") // option 12 is a host name, not an FQDN
	return dhcpclient.NewNode(ctx, ns, h, dhcpclient.NodeOptions{Timeout: timeout, Hostname: host, Log: log.With("component", "dhcp")})
}
