package bridge_test

import (
	"context"
	"encoding/json"
	"net"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/attachtest"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/knit-cni/knit/pkg/testutil"
)

// TestEveryVersion runs ADD, CHECK and DEL (twice) through the binary in
// every spec version and checks the printed result's shape and the kernel.
func TestEveryVersion(t *testing.T) {
	bin, dir := knitBin(t, "bridge")
	for _, v := range cni.SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			w := newWorld(t)
			c := testutil.NewNS(t)
			cfg := conf(v, `"bridge":"kbr0","isGateway":true,`+w.ipam("10.11.0.0/24"))
			req := &cni.Request{Command: cni.CmdAdd, ContainerID: "c1", Netns: c.Path(), IfName: "eth0", Config: cfg}
			out, err := w.exec(bin, req, dir)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			checkShape(t, v, out)
			res := testutil.DecodeResult(t, cfg, out)
			if len(res.Interfaces) != 3 || res.Interfaces[0].Name != "kbr0" || res.Interfaces[2].Name != "eth0" ||
				res.Interfaces[2].Sandbox != c.Path() || res.Interfaces[1].Sandbox != "" {
				t.Fatalf("interfaces %s", mustJSON(t, res.Interfaces))
			}
			hv := link(t, w.host, res.Interfaces[1].Name)
			if hv.Attrs().MasterIndex != link(t, w.host, "kbr0").Attrs().Index {
				t.Fatalf("host veth %s is not on kbr0", hv.Attrs().Name)
			}
			attachtest.HasAddr(t, c, "eth0", "10.11.0.2/24")
			attachtest.HasAddr(t, w.host, "kbr0", "10.11.0.1/24")
			if got := link(t, c, "eth0").Attrs().HardwareAddr.String(); got != res.Interfaces[2].Mac {
				t.Fatalf("container MAC %s, result %s", got, res.Interfaces[2].Mac)
			}
			if v >= "0.4.0" {
				req.Command, req.Config = cni.CmdCheck, attachtest.WithPrev(t, cfg, res)
				if _, err := w.exec(bin, req, dir); err != nil {
					t.Fatalf("CHECK: %v", err)
				}
			}
			req.Command, req.Config = cni.CmdDel, attachtest.WithPrev(t, cfg, res)
			for i := range 2 {
				if _, err := w.exec(bin, req, dir); err != nil {
					t.Fatalf("DEL #%d: %v", i+1, err)
				}
			}
			attachtest.NoLink(t, c, "eth0")
			attachtest.NoLink(t, w.host, res.Interfaces[1].Name)
			link(t, w.host, "kbr0") // the bridge stays, as the reference leaves it
			if w.held("10.11.0.2") {
				t.Fatal("10.11.0.2 still allocated after DEL")
			}
		})
	}
}

// checkShape checks the printed result against its version: cniVersion
// echoed, ips[].version only before 1.0.0, the address on interface 2.
func checkShape(t *testing.T, v string, out []byte) {
	t.Helper()
	var raw struct {
		CNIVersion string           `json:"cniVersion"`
		IPs        []map[string]any `json:"ips"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		t.Fatalf("result %s: %v", out, err)
	}
	if raw.CNIVersion != v || len(raw.IPs) != 1 {
		t.Fatalf("result %s", out)
	}
	_, hasVersion := raw.IPs[0]["version"]
	if hasVersion != (v < "1.0.0") {
		t.Fatalf("%s: ips[].version present=%v in %s", v, hasVersion, out)
	}
	if raw.IPs[0]["interface"] != float64(2) || raw.IPs[0]["gateway"] != "10.11.0.1" {
		t.Fatalf("ip %v: want interface 2, gateway 10.11.0.1", raw.IPs[0])
	}
}

// TestKernelState checks what ADD leaves besides addresses: sysctls on
// both sides, DAD off (no tentative addresses, no wait), forwarding, MTU.
func TestKernelState(t *testing.T) {
	w := newWorld(t)
	c := testutil.NewNS(t)
	res := w.add(c, "c1", conf("1.0.0", `"bridge":"kbr0","isGateway":true,"mtu":1400,`+w.ipam("10.12.0.0/24", "fd12::/64")))
	hostVeth := res.Interfaces[1].Name
	for key, want := range map[string]string{
		"net/ipv6/conf/kbr0/accept_ra":             "0",
		"net/ipv6/conf/" + hostVeth + "/accept_ra": "0",
		"net/ipv4/ip_forward":                      "1",
		"net/ipv6/conf/all/forwarding":             "1",
	} {
		if got := testutil.Sysctl(t, w.host, key); got != want {
			t.Errorf("host %s = %s, want %s", key, got, want)
		}
	}
	for key, want := range map[string]string{"net/ipv6/conf/eth0/accept_dad": "0", "net/ipv4/conf/eth0/arp_notify": "1"} {
		if got := testutil.Sysctl(t, c, key); got != want {
			t.Errorf("container %s = %s, want %s", key, got, want)
		}
	}
	for _, l := range []netlink.Link{link(t, w.host, "kbr0"), link(t, w.host, hostVeth), link(t, c, "eth0")} {
		if l.Attrs().MTU != 1400 {
			t.Errorf("%s MTU %d, want 1400", l.Attrs().Name, l.Attrs().MTU)
		}
	}
	addrs, err := nlsafe.AddrList(c.H, link(t, c, "eth0"), netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		// The kernel clears the link-local address's tentative flag from a
		// work queue even with DAD off, so only the IPAM address counts.
		if a.Flags&unix.IFA_F_TENTATIVE != 0 && !a.IP.IsLinkLocalUnicast() {
			t.Errorf("%s is tentative: ADD must not leave DAD pending", a.IPNet)
		}
	}
	testutil.MustPing(t, c, "fd12::1") // the bridge's gateway address does DAD, as the reference's
}

// TestEnableDad keeps DAD (enhanced) on when asked.
func TestEnableDad(t *testing.T) {
	w := newWorld(t)
	c := testutil.NewNS(t)
	w.add(c, "c1", conf("1.0.0", `"bridge":"kbr0","enabledad":true,`+w.ipam("fd13::/64")))
	for key, want := range map[string]string{"net/ipv6/conf/eth0/accept_dad": "1", "net/ipv6/conf/eth0/enhanced_dad": "1"} {
		if got := testutil.Sysctl(t, c, key); got != want {
			t.Errorf("container %s = %s, want %s", key, got, want)
		}
	}
	addrs, err := nlsafe.AddrList(c.H, link(t, c, "eth0"), netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if a.IP.Equal(net.ParseIP("fd13::2")) && a.Flags&unix.IFA_F_NODAD != 0 {
			t.Errorf("%s added with nodad although enabledad", a.IPNet)
		}
	}
}

// TestGatewayModes: without isGateway the bridge has no address and the
// container no default route; isGateway adds the address; isDefaultGateway
// also the default route per family.
func TestGatewayModes(t *testing.T) {
	for _, tc := range []struct {
		name          string
		opts          string
		bridgeAddr    bool
		defaultRoutes int
	}{
		{"l3-only", ``, false, 0},
		{"isGateway", `"isGateway":true,`, true, 0},
		{"isDefaultGateway", `"isDefaultGateway":true,`, true, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			c := testutil.NewNS(t)
			res := w.add(c, "c1", conf("1.0.0", `"bridge":"kbr0",`+tc.opts+w.ipam("10.14.0.0/24", "fd14::/64")))
			addrs, err := nlsafe.AddrList(w.host.H, link(t, w.host, "kbr0"), netlink.FAMILY_V4)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(addrs) == 1 && addrs[0].IPNet.String() == "10.14.0.1/24"; got != tc.bridgeAddr {
				t.Fatalf("bridge addresses %v, want gateway=%v", addrs, tc.bridgeAddr)
			}
			if len(res.Routes) != tc.defaultRoutes {
				t.Fatalf("result routes %s, want %d default routes", mustJSON(t, res.Routes), tc.defaultRoutes)
			}
			routes, err := nlsafe.RouteList(c.H, nil, netlink.FAMILY_ALL)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, r := range routes {
				if r.Gw != nil && (r.Gw.Equal(net.ParseIP("10.14.0.1")) || r.Gw.Equal(net.ParseIP("fd14::1"))) {
					n++
				}
			}
			if n != tc.defaultRoutes {
				t.Fatalf("container has %d routes via the gateways, want %d", n, tc.defaultRoutes)
			}
			if tc.bridgeAddr {
				testutil.MustPing(t, c, "10.14.0.1")
			}
		})
	}
}

// TestForceAddress: a bridge holding another IPv4 address fails ADD unless
// forceAddress, which replaces it.
func TestForceAddress(t *testing.T) {
	w := newWorld(t)
	if err := w.host.H.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "kbr0", TxQLen: -1}}); err != nil {
		t.Fatal(err)
	}
	attachtest.AddAddr(t, w.host, "kbr0", "10.15.9.1/24")
	c := testutil.NewNS(t)
	body := `"bridge":"kbr0","isGateway":true,` + w.ipam("10.15.0.0/24")
	_, err := w.call(cni.CmdAdd, c, "c1", "eth0", conf("1.0.0", body), "")
	if err == nil {
		t.Fatal("ADD succeeded over a conflicting bridge address")
	}
	attachtest.NoLink(t, c, "eth0")
	if w.held("10.15.0.2") {
		t.Fatal("failed ADD kept its address")
	}
	w.add(c, "c1", conf("1.0.0", `"forceAddress":true,`+body))
	addrs, _ := nlsafe.AddrList(w.host.H, link(t, w.host, "kbr0"), netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.15.0.1/24" {
		t.Fatalf("bridge addresses %v, want only 10.15.0.1/24", addrs)
	}
}

// TestMTUAndHairpin: hairpin mode is set on the port only when asked.
func TestHairpin(t *testing.T) {
	for _, on := range []bool{false, true} {
		w := newWorld(t)
		c := testutil.NewNS(t)
		body := `"bridge":"kbr0",` + w.ipam("10.16.0.0/24")
		if on {
			body = `"hairpinMode":true,` + body
		}
		res := w.add(c, "c1", conf("1.0.0", body))
		pi, err := w.host.H.LinkGetProtinfo(link(t, w.host, res.Interfaces[1].Name))
		if err != nil {
			t.Fatal(err)
		}
		if pi.Hairpin != on {
			t.Fatalf("hairpinMode=%v: port hairpin %v", on, pi.Hairpin)
		}
	}
}

// TestMAC: the container MAC comes from runtimeConfig.mac, else
// args.cni.mac, else CNI_ARGS MAC=.
func TestMAC(t *testing.T) {
	const env, args, rt = "0a:00:00:00:00:01", "0a:00:00:00:00:02", "0a:00:00:00:00:03"
	for _, tc := range []struct {
		name, body, envArgs, want string
	}{
		{"CNI_ARGS", ``, "IgnoreUnknown=1;MAC=" + env, env},
		{"args", `"args":{"cni":{"mac":"` + args + `"}},`, "IgnoreUnknown=1;MAC=" + env, args},
		{"runtimeConfig", `"args":{"cni":{"mac":"` + args + `"}},"runtimeConfig":{"mac":"` + rt + `"},`, "IgnoreUnknown=1;MAC=" + env, rt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			c := testutil.NewNS(t)
			r, err := w.call(cni.CmdAdd, c, "c1", "eth0", conf("1.0.0", tc.body+`"bridge":"kbr0",`+w.ipam("10.17.0.0/24")), tc.envArgs)
			if err != nil {
				t.Fatal(err)
			}
			res := attachtest.ResultOf(t, r)
			if got := link(t, c, "eth0").Attrs().HardwareAddr.String(); got != tc.want || res.Interfaces[2].Mac != tc.want {
				t.Fatalf("MAC %s (result %s), want %s", got, res.Interfaces[2].Mac, tc.want)
			}
		})
	}
}

// TestConfigErrors: bad input fails with the right code, names the field
// and changes nothing on the host or in the container.
func TestConfigErrors(t *testing.T) {
	w := newWorld(t)
	c := testutil.NewNS(t)
	ipam := w.ipam("10.18.0.0/24")
	for _, tc := range []struct {
		name, config, args string
		code               uint
		field              string
	}{
		{"hairpin+promisc", `{"cniVersion":"1.0.0","name":"n","type":"bridge","hairpinMode":true,"promiscMode":true,` + ipam + `}`, "", 7, "promiscMode"},
		{"disableContainerInterface+ipam", `{"cniVersion":"1.0.0","name":"n","type":"bridge","disableContainerInterface":true,` + ipam + `}`, "", 7, "disableContainerInterface"},
		{"vlan range", `{"cniVersion":"1.0.0","name":"n","type":"bridge","vlan":4095}`, "", 7, "vlan"},
		{"trunk min>max", `{"cniVersion":"1.0.0","name":"n","type":"bridge","vlanTrunk":[{"minID":20,"maxID":10}]}`, "", 7, "vlanTrunk"},
		{"trunk half range", `{"cniVersion":"1.0.0","name":"n","type":"bridge","vlanTrunk":[{"minID":20}]}`, "", 7, "vlanTrunk"},
		{"vlan+trunk", `{"cniVersion":"1.0.0","name":"n","type":"bridge","vlan":5,"vlanTrunk":[{"id":7}]}`, "", 7, "vlanTrunk"},
		{"bad mac", `{"cniVersion":"1.0.0","name":"n","type":"bridge","runtimeConfig":{"mac":"zz"}}`, "", 7, "runtimeConfig.mac"},
		{"multicast mac", `{"cniVersion":"1.0.0","name":"n","type":"bridge","args":{"cni":{"mac":"01:00:5e:00:00:01"}}}`, "", 7, "args.cni.mac"},
		{"bad CNI_ARGS mac", `{"cniVersion":"1.0.0","name":"n","type":"bridge"}`, "MAC=nope", 7, "CNI_ARGS MAC"},
		{"unknown CNI_ARGS", `{"cniVersion":"1.0.0","name":"n","type":"bridge"}`, "FOO=1", 4, "FOO"},
		{"backend", `{"cniVersion":"1.0.0","name":"n","type":"bridge","ipMasq":true,"ipMasqBackend":"pf"}`, "", 7, "ipMasqBackend"},
		{"bridge name", `{"cniVersion":"1.0.0","name":"n","type":"bridge","bridge":"a-very-long-bridge-name"}`, "", 7, "bridge"},
		{"mtu", `{"cniVersion":"1.0.0","name":"n","type":"bridge","mtu":-1}`, "", 7, "mtu"},
		{"wrong type", `{"cniVersion":"1.0.0","name":"n","type":"bridge","isGateway":"yes"}`, "", 6, "isGateway"},
		{"bad json", `{"cniVersion":"1.0.0",`, "", 6, ""},
		{"version", `{"cniVersion":"9.9.9","name":"n","type":"bridge"}`, "", 1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := w.call(cni.CmdAdd, c, "c1", "eth0", []byte(tc.config), tc.args)
			attachtest.WantCode(t, err, tc.code, tc.field)
			if l := w.hostLinks(); len(l) != 0 {
				t.Fatalf("host has links %v after a rejected ADD", l)
			}
			attachtest.NoLink(t, c, "eth0")
		})
	}
}

// TestExistingNonBridge: a link of another kind under the bridge's name is
// a config error.
func TestExistingNonBridge(t *testing.T) {
	w := newWorld(t)
	testutil.Veth(t, w.host, "kbr0", w.host, "kbr0peer")
	c := testutil.NewNS(t)
	_, err := w.call(cni.CmdAdd, c, "c1", "eth0", conf("1.0.0", `"bridge":"kbr0"`), "")
	attachtest.WantCode(t, err, types.ErrInvalidNetworkConfig, "not a bridge")
	attachtest.NoLink(t, c, "eth0")
}

// TestLayer2 without IPAM: the container link is up with no addresses;
// with disableContainerInterface it stays down.
func TestLayer2(t *testing.T) {
	for _, disable := range []bool{false, true} {
		w := newWorld(t)
		c := testutil.NewNS(t)
		body := `"bridge":"kbr0","ipam":{}`
		if disable {
			body = `"disableContainerInterface":true,` + body
		}
		res := w.add(c, "c1", conf("1.0.0", body))
		if len(res.IPs) != 0 || len(res.Interfaces) != 3 {
			t.Fatalf("result %s", mustJSON(t, res))
		}
		up := link(t, c, "eth0").Attrs().Flags&net.FlagUp != 0
		if up == disable {
			t.Fatalf("disableContainerInterface=%v: container link up=%v", disable, up)
		}
		if link(t, w.host, res.Interfaces[1].Name).Attrs().MasterIndex == 0 {
			t.Fatal("host veth not on the bridge")
		}
		w.del(c, "c1", conf("1.0.0", body))
		attachtest.NoLink(t, c, "eth0")
	}
}

// TestPromisc sets the bridge promiscuous.
func TestPromisc(t *testing.T) {
	w := newWorld(t)
	c := testutil.NewNS(t)
	w.add(c, "c1", conf("1.0.0", `"bridge":"kbr0","promiscMode":true,`+w.ipam("10.19.0.0/24")))
	if link(t, w.host, "kbr0").Attrs().Promisc == 0 {
		t.Fatal("bridge not promiscuous")
	}
}

var _ = context.Background
