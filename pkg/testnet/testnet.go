// Package testnet builds the topology the chained host plugins (portmap,
// firewall) are tested in, entirely inside test namespaces: a "host"
// namespace with forwarding on, Linux bridges and veths to "container"
// namespaces, and an "external" client namespace connected to the host by a
// veth. It also writes the prevResult the bridge plugin would have produced
// and moves test traffic (TCP and UDP servers that answer with the peer
// address they see).
package testnet

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/sysctl"
	"github.com/knit-cni/knit/pkg/testutil"
)

// Addresses of the host/external link.
var (
	HostExtIP4 = net.IPv4(192, 168, 100, 1).To4()
	ExtIP4     = net.IPv4(192, 168, 100, 2).To4()
	HostExtIP6 = net.ParseIP("fd00:100::1")
	ExtIP6     = net.ParseIP("fd00:100::2")
)

// Topo is a host namespace with an external client namespace.
type Topo struct {
	Host *testutil.NS
	Ext  *testutil.NS
}

// New creates the host namespace (IPv4/IPv6 forwarding on) and the external
// namespace, linked host "ext0" <-> external "eth0", with the external
// side's default routes via the host.
func New(t testing.TB) *Topo {
	t.Helper()
	tp := &Topo{Host: NewNS(t), Ext: NewNS(t)}
	err := tp.Host.Do(func() error {
		return errors.Join(sysctl.Set("net.ipv4.ip_forward", "1"), sysctl.Set("net/ipv6/conf/all/forwarding", "1"))
	})
	if err != nil {
		t.Fatalf("forwarding: %v", err)
	}
	testutil.Veth(t, tp.Host, "ext0", tp.Ext, "eth0")
	AddAddr(t, tp.Host, "ext0", HostExtIP4, 24)
	AddAddr(t, tp.Host, "ext0", HostExtIP6, 64)
	AddAddr(t, tp.Ext, "eth0", ExtIP4, 24)
	AddAddr(t, tp.Ext, "eth0", ExtIP6, 64)
	DefaultRoute(t, tp.Ext, "eth0", HostExtIP4)
	DefaultRoute(t, tp.Ext, "eth0", HostExtIP6)
	return tp
}

// NewNS is testutil.NewNS without IPv6 duplicate address detection on the
// links created in it later: link-local addresses would otherwise stay
// tentative for a second and neighbour discovery stall the first packets.
func NewNS(t testing.TB) *testutil.NS {
	t.Helper()
	ns := testutil.NewNS(t)
	err := ns.Do(func() error {
		return errors.Join(sysctl.Set("net/ipv6/conf/all/accept_dad", "0"),
			sysctl.Set("net/ipv6/conf/default/accept_dad", "0"))
	})
	if err != nil {
		t.Fatalf("disabling DAD: %v", err)
	}
	return ns
}

// AddAddr adds ip/prefix to a link, without duplicate address detection so
// IPv6 addresses are usable at once.
func AddAddr(t testing.TB, ns *testutil.NS, link string, ip net.IP, prefix int) {
	t.Helper()
	l, err := ns.H.LinkByName(link)
	if err != nil {
		t.Fatalf("link %s: %v", link, err)
	}
	bits := 32
	if ip.To4() == nil {
		bits = 128
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(prefix, bits)}, Flags: unix.IFA_F_NODAD}
	if err := ns.H.AddrAdd(l, a); err != nil {
		t.Fatalf("address %s/%d on %s: %v", ip, prefix, link, err)
	}
}

// DefaultRoute adds a default route via gw on link.
func DefaultRoute(t testing.TB, ns *testutil.NS, link string, gw net.IP) {
	t.Helper()
	l, err := ns.H.LinkByName(link)
	if err != nil {
		t.Fatalf("link %s: %v", link, err)
	}
	dst := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	if gw.To4() == nil {
		dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	if err := ns.H.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst, Gw: gw}); err != nil {
		t.Fatalf("default route via %s: %v", gw, err)
	}
}

// Bridge is a Linux bridge in the host namespace with gateway addresses.
type Bridge struct {
	Name     string
	GW4, GW6 *net.IPNet // gateway address with the subnet's prefix
	n        int
}

// AddBridge creates bridge name with gateways gw4 ("10.10.0.1/24") and
// optionally gw6.
func (tp *Topo) AddBridge(t testing.TB, name, gw4, gw6 string) *Bridge {
	t.Helper()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := tp.Host.H.LinkAdd(br); err != nil {
		t.Fatalf("bridge %s: %v", name, err)
	}
	l, err := tp.Host.H.LinkByName(name)
	if err == nil {
		err = tp.Host.H.LinkSetUp(l)
	}
	if err != nil {
		t.Fatalf("bridge %s up: %v", name, err)
	}
	b := &Bridge{Name: name}
	for _, gw := range []string{gw4, gw6} {
		if gw == "" {
			continue
		}
		ip, n, err := net.ParseCIDR(gw)
		if err != nil {
			t.Fatalf("gateway %q: %v", gw, err)
		}
		ones, _ := n.Mask.Size()
		AddAddr(t, tp.Host, name, ip, ones)
		if ip.To4() != nil {
			b.GW4 = &net.IPNet{IP: ip.To4(), Mask: n.Mask}
		} else {
			b.GW6 = &net.IPNet{IP: ip, Mask: n.Mask}
		}
	}
	return b
}

// Container is a namespace attached to a bridge.
type Container struct {
	NS       *testutil.NS
	IfName   string
	HostVeth string
	IP4, IP6 *net.IPNet
	Bridge   *Bridge
	MAC      string
}

// AddContainer attaches a new namespace to br with the host index-th
// address of the bridge's subnets (index 2 = .2), eth0 inside. The bridge
// port is in hairpin mode.
func (tp *Topo) AddContainer(t testing.TB, br *Bridge, index int) *Container {
	t.Helper()
	br.n++
	c := &Container{NS: NewNS(t), IfName: "eth0", Bridge: br,
		HostVeth: fmt.Sprintf("v%s%d", br.Name, br.n)}
	testutil.Veth(t, tp.Host, c.HostVeth, c.NS, c.IfName)
	hv, err := tp.Host.H.LinkByName(c.HostVeth)
	if err == nil {
		var bl netlink.Link
		bl, err = tp.Host.H.LinkByName(br.Name)
		if err == nil {
			err = tp.Host.H.LinkSetMaster(hv, bl)
		}
	}
	if err == nil {
		// As the bridge plugin's hairpinMode: with br_netfilter, a
		// container's connection to its own host port is DNATed back out
		// the port it came in by.
		err = tp.Host.H.LinkSetHairpin(hv, true)
	}
	if err != nil {
		t.Fatalf("attaching %s to %s: %v", c.HostVeth, br.Name, err)
	}
	for _, gw := range []*net.IPNet{br.GW4, br.GW6} {
		if gw == nil {
			continue
		}
		ip := nth(gw, index)
		ones, _ := gw.Mask.Size()
		AddAddr(t, c.NS, c.IfName, ip, ones)
		DefaultRoute(t, c.NS, c.IfName, gw.IP)
		if ip.To4() != nil {
			c.IP4 = &net.IPNet{IP: ip, Mask: gw.Mask}
		} else {
			c.IP6 = &net.IPNet{IP: ip, Mask: gw.Mask}
		}
	}
	if l, err := c.NS.H.LinkByName(c.IfName); err == nil {
		c.MAC = l.Attrs().HardwareAddr.String()
	}
	return c
}

func nth(gw *net.IPNet, index int) net.IP {
	ip := append(net.IP(nil), gw.IP.Mask(gw.Mask)...)
	ip[len(ip)-1] += byte(index)
	return ip
}

// Result is the result the bridge plugin would return for c: bridge, host
// veth and container interface, with the container's addresses and
// gateways.
func (c *Container) Result() *current.Result {
	r := &current.Result{CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: c.Bridge.Name}, {Name: c.HostVeth},
			{Name: c.IfName, Mac: c.MAC, Sandbox: c.NS.Path()}}}
	for _, p := range []struct{ ip, gw *net.IPNet }{{c.IP4, c.Bridge.GW4}, {c.IP6, c.Bridge.GW6}} {
		if p.ip != nil {
			r.IPs = append(r.IPs, &current.IPConfig{Interface: current.Int(2), Address: *p.ip, Gateway: p.gw.IP})
		}
	}
	return r
}

// Config returns a plugin config in version with fields (type, name,
// runtimeConfig, ...) and prevResult converted to version.
func Config(t testing.TB, version string, fields map[string]any, prev types.Result) []byte {
	t.Helper()
	m := map[string]any{"cniVersion": version}
	for k, v := range fields {
		m[k] = v
	}
	if prev != nil {
		conv, err := prev.GetAsVersion(version)
		if err != nil {
			t.Fatalf("prevResult as %s: %v", version, err)
		}
		m["prevResult"] = conv
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ConfigFor is Config for a chained plugin's ADD/CHECK/DEL on c: the
// fields maps merged in order (later keys win) and c's bridge result as
// prevResult (none when c is nil).
func ConfigFor(t testing.TB, version string, c *Container, fields ...map[string]any) []byte {
	t.Helper()
	m := map[string]any{}
	for _, f := range fields {
		for k, v := range f {
			m[k] = v
		}
	}
	var prev types.Result
	if c != nil {
		prev = c.Result()
	}
	return Config(t, version, m, prev)
}

// Request is a request for container id's eth0, with a netns path that
// need not exist (the chained plugins act on the host side).
func Request(cmd cni.Command, id string, config []byte) *cni.Request {
	return &cni.Request{Command: cmd, ContainerID: id, IfName: "eth0", Netns: "/var/run/netns/" + id, Config: config}
}

// Server is a TCP and UDP server that answers every connection or datagram
// with the peer address it sees.
type Server struct {
	tcp net.Listener
	udp net.PacketConn
	wg  sync.WaitGroup
}

// Serve starts a server on port (TCP and UDP, all addresses) in ns.
func Serve(t testing.TB, ns *testutil.NS, port int) *Server {
	t.Helper()
	s := &Server{}
	err := ns.Do(func() error {
		var err error
		if s.tcp, err = net.Listen("tcp", fmt.Sprintf(":%d", port)); err != nil {
			return err
		}
		s.udp, err = net.ListenPacket("udp", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		t.Fatalf("serving on %d: %v", port, err)
	}
	s.wg.Add(2)
	go s.serveTCP()
	go s.serveUDP()
	t.Cleanup(func() { s.tcp.Close(); s.udp.Close(); s.wg.Wait() })
	return s
}

func (s *Server) serveTCP() {
	defer s.wg.Done()
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			return
		}
		fmt.Fprintln(c, c.RemoteAddr().String())
		c.Close()
	}
}

func (s *Server) serveUDP() {
	defer s.wg.Done()
	buf := make([]byte, 64)
	for {
		_, peer, err := s.udp.ReadFrom(buf)
		if err != nil {
			return
		}
		_, _ = s.udp.WriteTo([]byte(peer.String()+"\n"), peer)
	}
}

// DialTCP connects from ns to addr ("ip:port") and returns the peer address
// the server reported, without the port.
func DialTCP(ns *testutil.NS, addr string) (string, error) {
	return DialTCPTimeout(ns, addr, 2*time.Second)
}

// DialTCPTimeout is DialTCP with a timeout: tests that expect a dropped
// connection use a short one.
func DialTCPTimeout(ns *testutil.NS, addr string, timeout time.Duration) (string, error) {
	var line string
	err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		line, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	return peerHost(line), err
}

// ExchangeUDP sends a datagram from ns to addr and returns the peer address
// the server reported. It retries a few times: a first datagram may be
// lost while neighbours resolve.
func ExchangeUDP(ns *testutil.NS, addr string) (string, error) {
	return ExchangeUDPFrom(ns, 0, addr)
}

// ExchangeUDPFrom is ExchangeUDP from a fixed source port (0: any), so
// that several exchanges share one conntrack entry.
func ExchangeUDPFrom(ns *testutil.NS, srcPort int, addr string) (string, error) {
	var line string
	err := ns.Do(func() error {
		d := net.Dialer{LocalAddr: &net.UDPAddr{Port: srcPort}}
		c, err := d.Dial("udp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 128)
		for range 4 {
			if _, err = c.Write([]byte("x")); err != nil {
				return err
			}
			_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			var n int
			if n, err = c.Read(buf); err == nil {
				line = string(buf[:n])
				return nil
			}
		}
		return err
	})
	return peerHost(line), err
}

func peerHost(line string) string {
	line = strings.TrimSpace(line)
	if h, _, err := net.SplitHostPort(line); err == nil {
		return h
	}
	return line
}

// HostPort joins an IP and a port, bracketing IPv6.
func HostPort(ip net.IP, port int) string { return net.JoinHostPort(ip.String(), fmt.Sprint(port)) }
