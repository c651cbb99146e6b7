package nmstate

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// GatewayProbe pings the namespace's IPv4 default gateway, looked up when
// the probe runs (the change may have moved it). With no default route it
// fails, so Apply only uses it where a gateway answered before the change.
func (e *Engine) GatewayProbe(timeout time.Duration) Probe {
	return Probe{Name: "default-gateway", Run: func(ctx context.Context) error {
		gw, err := e.defaultGateway()
		if err != nil {
			return err
		}
		return e.ping(ctx, gw, timeout)
	}}
}

func (e *Engine) defaultGateway() (net.IP, error) {
	routes, err := nlsafe.RouteList(e.NL, nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw != nil {
			return r.Gw, nil
		}
	}
	return nil, fmt.Errorf("no IPv4 default gateway")
}

// ping sends ICMP echoes to ip until one is answered or timeout passes.
func (e *Engine) ping(ctx context.Context, ip net.IP, timeout time.Duration) error {
	var conn *icmp.PacketConn
	// The socket is created inside the namespace and stays bound to it.
	err := e.NS.Do(func() error {
		var err error
		conn, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	})
	if err != nil {
		return fmt.Errorf("icmp socket: %w", err)
	}
	defer conn.Close()
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	id := os.Getpid() & 0xffff
	for seq := 1; time.Now().Before(deadline); seq++ {
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("knit-probe")}}
		b, _ := msg.Marshal(nil)
		if _, err := conn.WriteTo(b, &net.IPAddr{IP: ip}); err != nil {
			return fmt.Errorf("ping %s: %w", ip, err)
		}
		if replied(conn, ip, id, time.Now().Add(300*time.Millisecond)) {
			return nil
		}
	}
	return fmt.Errorf("gateway %s did not answer within %s", ip, timeout)
}

func replied(conn *icmp.PacketConn, ip net.IP, id int, until time.Time) bool {
	buf := make([]byte, 1500)
	_ = conn.SetReadDeadline(until)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			return false
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		if echo, ok := m.Body.(*icmp.Echo); ok && echo.ID == id && from.(*net.IPAddr).IP.Equal(ip) {
			return true
		}
	}
}
