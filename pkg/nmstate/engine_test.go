package nmstate

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/knit-cni/knit/pkg/testutil"
)

// node is a test namespace playing a node with a stand-in NIC ens35 whose
// peer sits in a second namespace (the L2 segment).
type node struct {
	*testutil.NS
	seg *testutil.NS
	eng *Engine
}

func newNode(t *testing.T) *node {
	t.Helper()
	testutil.RequireRoot(t)
	n := &node{NS: testutil.NewNS(t), seg: testutil.NewNS(t)}
	testutil.Veth(t, n.NS, "ens35", n.seg, "peer0")
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 10.9.9.9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	n.eng = &Engine{NS: n.NS.NS, NL: n.H, ResolvConf: resolv}
	return n
}

const seed002 = `
interfaces:
  - name: br1
    description: Linux bridge with ens35 as a port
    type: linux-bridge
    state: up
    ipv4:
      address:
        - ip: 192.168.72.41
          prefix-length: 24
      enabled: true
    bridge:
      options:
        stp:
          enabled: false
      port:
        - name: ens35
`

func mustParse(t *testing.T, y string) *State {
	t.Helper()
	s, err := Parse([]byte(y))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return s
}

func TestApplyBridgeWithPort(t *testing.T) {
	n := newNode(t)
	ctx := context.Background()
	if err := n.eng.Apply(ctx, mustParse(t, seed002)); err != nil {
		t.Fatalf("apply: %v", err)
	}
	br, err := n.H.LinkByName("br1")
	if err != nil {
		t.Fatalf("br1 missing: %v", err)
	}
	if br.Type() != "bridge" || br.Attrs().Alias != "Linux bridge with ens35 as a port" {
		t.Fatalf("br1 = %s alias %q", br.Type(), br.Attrs().Alias)
	}
	port, _ := n.H.LinkByName("ens35")
	if port.Attrs().MasterIndex != br.Attrs().Index {
		t.Fatal("ens35 is not a port of br1")
	}
	cur, err := n.eng.Read()
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, ifc := range cur.Interfaces {
		if ifc.Name == "br1" {
			found = true
			if *ifc.Bridge.Options.STP.Enabled || len(*ifc.Bridge.Port) != 1 || (*ifc.IPv4.Address)[0].IP != "192.168.72.41" {
				t.Fatalf("br1 state %+v", ifc)
			}
		}
	}
	if !found {
		t.Fatal("br1 not in current state")
	}
	// Idempotent re-apply.
	if err := n.eng.Apply(ctx, mustParse(t, seed002)); err != nil {
		t.Fatalf("re-apply: %v", err)
	}
}

func TestSTPToggle(t *testing.T) {
	n := newNode(t)
	ctx := context.Background()
	on := strings.Replace(seed002, "enabled: false", "enabled: true", 1)
	if err := n.eng.Apply(ctx, mustParse(t, on)); err != nil {
		t.Fatalf("apply: %v", err)
	}
	br, _ := n.H.LinkByName("br1")
	if got, err := n.eng.bridgeSTP(br); err != nil || !got {
		t.Fatalf("stp = %v, %v; want on", got, err)
	}
	if err := n.eng.Apply(ctx, mustParse(t, seed002)); err != nil {
		t.Fatalf("apply: %v", err)
	}
	if got, _ := n.eng.bridgeSTP(br); got {
		t.Fatal("stp still on")
	}
}

func TestPartialEditKeepsTheRest(t *testing.T) {
	n := newNode(t)
	ctx := context.Background()
	if err := n.eng.Apply(ctx, mustParse(t, seed002)); err != nil {
		t.Fatal(err)
	}
	if err := n.eng.Apply(ctx, mustParse(t, "interfaces:\n- name: br1\n  mtu: 1400\n")); err != nil {
		t.Fatalf("partial: %v", err)
	}
	br, _ := n.H.LinkByName("br1")
	addrs, _ := nlsafe.AddrList(n.H, br, netlink.FAMILY_V4)
	if br.Attrs().MTU != 1400 || len(addrs) != 1 {
		t.Fatalf("mtu %d addrs %v", br.Attrs().MTU, addrs)
	}
	port, _ := n.H.LinkByName("ens35")
	if port.Attrs().MasterIndex != br.Attrs().Index {
		t.Fatal("partial edit dropped the port")
	}
}

func TestAbsentRemoves(t *testing.T) {
	n := newNode(t)
	ctx := context.Background()
	if err := n.eng.Apply(ctx, mustParse(t, seed002)); err != nil {
		t.Fatal(err)
	}
	if err := n.eng.Apply(ctx, mustParse(t, "interfaces:\n- name: br1\n  state: absent\n")); err != nil {
		t.Fatalf("absent: %v", err)
	}
	if _, err := n.H.LinkByName("br1"); err == nil {
		t.Fatal("br1 still exists")
	}
	port, _ := n.H.LinkByName("ens35")
	if port.Attrs().MasterIndex != 0 {
		t.Fatal("ens35 still enslaved")
	}
}

func TestRollbackRestoresExactState(t *testing.T) {
	n := newNode(t)
	ctx := context.Background()
	// A previous state with something to lose: br0 owning ens35 with an
	// address, a static route and a resolver.
	prev := `
interfaces:
- name: br0
  type: linux-bridge
  ipv4: {enabled: true, address: [{ip: 10.50.0.1, prefix-length: 24}]}
  bridge: {port: [{name: ens35}]}
routes:
  config:
  - {destination: 10.60.0.0/16, next-hop-address: 10.50.0.254, next-hop-interface: br0}
`
	if err := n.eng.Apply(ctx, mustParse(t, prev)); err != nil {
		t.Fatal(err)
	}
	before, err := n.eng.Read()
	if err != nil {
		t.Fatal(err)
	}
	change := seed002 + `
  - name: br0
    state: absent
routes:
  config:
  - {destination: 0.0.0.0/0, next-hop-address: 192.168.72.1, next-hop-interface: br1}
dns-resolver:
  config: {server: [192.168.72.53]}
`
	// The probe passes before the change and fails after it, as a probe of
	// an API server reached through br0 would.
	failing := Probe{Name: "api-server", Run: func(context.Context) error {
		if _, err := n.H.LinkByName("br0"); err != nil {
			return errors.New("unreachable")
		}
		return nil
	}}
	err = n.eng.Apply(ctx, mustParse(t, change), failing)
	var ae *ApplyError
	if !errors.As(err, &ae) || ae.Stage != "probe api-server" || ae.RollbackErr != nil {
		t.Fatalf("apply error = %v, want a rolled-back probe failure", err)
	}
	after, err := n.eng.Read()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("state after rollback differs:\nbefore %+v\nafter  %+v", before, after)
	}
	if _, err := n.H.LinkByName("br1"); err == nil {
		t.Fatal("br1 left behind")
	}
	b, _ := os.ReadFile(n.eng.ResolvConf)
	if string(b) != "nameserver 10.9.9.9\n" {
		t.Fatalf("resolv.conf = %q", b)
	}
}

func TestVerifyFailureRollsBack(t *testing.T) {
	n := newNode(t)
	n.eng.VerifyTimeout = 300e6
	// macvlan on ens35 with a description: fine; then ask for a port that
	// is a macvlan's parent — the apply itself fails on a missing port.
	bad := `
interfaces:
- name: br9
  type: linux-bridge
  bridge: {port: [{name: nosuchnic}]}
`
	err := n.eng.Apply(context.Background(), mustParse(t, bad))
	var ae *ApplyError
	if !errors.As(err, &ae) || ae.Stage != "apply" || ae.RollbackErr != nil {
		t.Fatalf("err = %v", err)
	}
	if _, err := n.H.LinkByName("br9"); err == nil {
		t.Fatal("br9 left behind after failed apply")
	}
}

func TestParseRejectsUnknownFields(t *testing.T) {
	for _, y := range []string{
		"interfaces:\n- name: br1\n  typo: x\n",
		"interfaces:\n- name: br1\n  bridge: {options: {stp: {enabeld: true}}}\n",
		"foo: 1\n",
	} {
		_, err := Parse([]byte(y))
		if err == nil || !strings.Contains(err.Error(), "unknown field") {
			t.Errorf("%q: err = %v, want unknown field", y, err)
		}
	}
	for y, want := range map[string]string{
		"interfaces:\n- name: br1\n  state: sideways\n":                                 "state",
		"interfaces:\n- name: v1\n  type: vlan\n  vlan: {base-iface: e, id: 5000}\n":    "vlan",
		"interfaces:\n- name: a\n  ipv4: {address: [{ip: '::1', prefix-length: 64}]}\n": "ipv4",
		"routes: {config: [{destination: nope}]}\n":                                     "destination",
	} {
		_, err := Parse([]byte(y))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want mention of %s", y, err, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(seed002))
	f.Add([]byte("routes: {config: [{destination: 0.0.0.0/0, state: absent}]}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data)
		if err == nil && s == nil {
			t.Fatal("nil state without error")
		}
	})
}

func TestProbeFailingBeforeChangeIsSkipped(t *testing.T) {
	n := newNode(t)
	var calls int
	broken := Probe{Name: "dns", Run: func(context.Context) error { calls++; return errors.New("no DNS") }}
	if err := n.eng.Apply(context.Background(), mustParse(t, seed002), broken); err != nil {
		t.Fatalf("apply: %v", err)
	}
	if calls != 1 {
		t.Fatalf("probe ran %d times, want once (before the change only)", calls)
	}
}

// A change that takes the address off the uplink cuts the node off its
// gateway: the real ICMP probe fails and the node gets its uplink back.
func TestGatewayProbeRollsBackCutOff(t *testing.T) {
	n := newNode(t)
	ctx := context.Background()
	peer, _ := n.seg.H.LinkByName("peer0")
	gw, _ := netlink.ParseAddr("10.70.0.1/24")
	if err := n.seg.H.AddrAdd(peer, gw); err != nil {
		t.Fatal(err)
	}
	// The address is added as iproute2 adds it: without a broadcast, which
	// the restore must reproduce exactly.
	ens35, _ := n.H.LinkByName("ens35")
	own, _ := netlink.ParseAddr("10.70.0.2/24")
	own.Broadcast = net.IPv4zero
	if err := n.H.AddrAdd(ens35, own); err != nil {
		t.Fatal(err)
	}
	rawBefore, _ := nlsafe.AddrList(n.H, ens35, netlink.FAMILY_V4)
	up := `
routes:
  config:
  - {destination: 0.0.0.0/0, next-hop-address: 10.70.0.1, next-hop-interface: ens35}
`
	if err := n.eng.Apply(ctx, mustParse(t, up)); err != nil {
		t.Fatal(err)
	}
	before, _ := n.eng.Read()
	probe := n.eng.GatewayProbe(2e9)
	cut := "interfaces:\n- name: ens35\n  ipv4: {enabled: false}\n"
	err := n.eng.Apply(ctx, mustParse(t, cut), probe)
	var ae *ApplyError
	if !errors.As(err, &ae) || ae.Stage != "probe default-gateway" || ae.RollbackErr != nil {
		t.Fatalf("err = %v, want rolled-back gateway probe failure", err)
	}
	after, _ := n.eng.Read()
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("not restored:\nbefore %+v\nafter  %+v", before, after)
	}
	if err := probe.Run(ctx); err != nil {
		t.Fatalf("gateway unreachable after rollback: %v", err)
	}
	rawAfter, _ := nlsafe.AddrList(n.H, ens35, netlink.FAMILY_V4)
	if len(rawAfter) != 1 || ipString(rawAfter[0].Broadcast) != ipString(rawBefore[0].Broadcast) {
		t.Fatalf("address not restored exactly: before %+v (brd %v) after %+v (brd %v)", rawBefore, rawBefore[0].Broadcast, rawAfter, rawAfter[0].Broadcast)
	}
}

// BenchmarkApplyVerify is one apply+verify of the seed's bridge policy on a
// node (kubernetes-nmstate takes seconds to a minute for this, #1242),
// alternating create and remove so every iteration changes the kernel.
func BenchmarkApplyVerify(b *testing.B) {
	testutil.RequireRoot(b)
	n := &node{NS: testutil.NewNS(b), seg: testutil.NewNS(b)}
	testutil.Veth(b, n.NS, "ens35", n.seg, "peer0")
	n.eng = &Engine{NS: n.NS.NS, NL: n.H, ResolvConf: filepath.Join(b.TempDir(), "resolv.conf")}
	up, err := Parse([]byte(seed002))
	if err != nil {
		b.Fatal(err)
	}
	down, _ := Parse([]byte("interfaces:\n- {name: br1, state: absent}\n"))
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := n.eng.Apply(ctx, up); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := n.eng.Apply(ctx, down); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// The DNS probe asks the servers the desired state configures: a real
// dnsmasq answering in the segment namespace passes, a missing server fails.
func TestDNSProbe(t *testing.T) {
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Skip("dnsmasq not installed")
	}
	n := newNode(t)
	peer, _ := n.seg.H.LinkByName("peer0")
	a, _ := netlink.ParseAddr("10.71.0.1/24")
	if err := n.seg.H.AddrAdd(peer, a); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dns := exec.CommandContext(ctx, "nsenter", "--net="+n.seg.Path(), "dnsmasq", "--keep-in-foreground",
		"--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--listen-address=10.71.0.1", "--bind-interfaces",
		"--pid-file=", "--address=/knit.test/10.71.0.9")
	if err := dns.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = dns.Wait() }()
	d := mustParse(t, `
interfaces:
- name: ens35
  ipv4: {enabled: true, address: [{ip: 10.71.0.2, prefix-length: 24}]}
dns-resolver:
  config: {server: [10.71.0.1]}
`)
	probe, ok := n.eng.DNSProbe(d, time.Second)
	if !ok {
		t.Fatal("no DNS probe for a state with servers")
	}
	if err := n.eng.Apply(context.Background(), d, probe); err != nil {
		t.Fatalf("apply: %v", err)
	}
	// The server answers once the node has its address; poll for dnsmasq's start.
	deadline := time.Now().Add(5 * time.Second)
	for err := probe.Run(context.Background()); err != nil; err = probe.Run(context.Background()) {
		if time.Now().After(deadline) {
			t.Fatalf("DNS probe against a live server: %v", err)
		}
		<-time.After(50 * time.Millisecond) // poll interval
	}
	dead, _ := n.eng.DNSProbe(mustParse(t, "dns-resolver: {config: {server: [10.71.0.77]}}\n"), 300*time.Millisecond)
	if err := dead.Run(context.Background()); err == nil {
		t.Fatal("DNS probe against a missing server passed")
	}
}
