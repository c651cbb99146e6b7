package portmap_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/hostns"
	"github.com/knit-cni/knit/pkg/testnet"
	"github.com/knit-cni/knit/pkg/testutil"
	"github.com/knit-cni/knit/plugins/portmap"
	"github.com/knit-cni/knit/plugins/portmap/portmaptest"
)

// env is a host namespace with bridge br0 (10.10.0.1/24, fd00:10::1/64),
// an external client and containers.
type env struct {
	*testnet.Topo
	br *testnet.Bridge
	p  portmap.Plugin
}

func newEnv(t *testing.T) *env {
	t.Helper()
	testutil.RequireRoot(t)
	tp := testnet.New(t)
	return &env{Topo: tp, br: tp.AddBridge(t, "br0", "10.10.0.1/24", "fd00:10::1/64"),
		p: portmap.Plugin{HostNS: tp.Host.Path()}}
}

type pm = map[string]any

func tcp(host, cont int) pm { return pm{"hostPort": host, "containerPort": cont, "protocol": "tcp"} }
func udp(host, cont int) pm { return pm{"hostPort": host, "containerPort": cont, "protocol": "udp"} }

// conf is a portmap config for container c with mappings and extra keys.
func conf(t *testing.T, version string, c *testnet.Container, maps []pm, extra pm) []byte {
	t.Helper()
	return testnet.ConfigFor(t, version, c, pm{"name": "net1", "type": "portmap", "runtimeConfig": pm{"portMappings": maps}}, extra)
}

func (e *env) call(t *testing.T, r *cni.Request) (types.Result, error) {
	t.Helper()
	return cni.Call(context.Background(), e.p, r)
}

func (e *env) mustAdd(t *testing.T, id string, config []byte) *current.Result {
	t.Helper()
	res, err := e.call(t, testnet.Request(cni.CmdAdd, id, config))
	if err != nil {
		t.Fatalf("ADD %s: %v", id, err)
	}
	cur, err := cni.AsCurrent(res)
	if err != nil {
		t.Fatal(err)
	}
	return cur
}

func (e *env) mustDel(t *testing.T, id string, config []byte) {
	t.Helper()
	if _, err := e.call(t, testnet.Request(cni.CmdDel, id, config)); err != nil {
		t.Fatalf("DEL %s: %v", id, err)
	}
}

// nft runs nft in the host namespace.
func (e *env) nft(t *testing.T, args ...string) string {
	t.Helper()
	out, err := testutil.In(context.Background(), e.Host, "nft", args...)
	if err != nil && !strings.Contains(string(out), "No such file") {
		t.Fatalf("nft %v: %v: %s", args, err, out)
	}
	return string(out)
}

// ipt runs iptables-save (v4) or ip6tables-save in the host namespace.
func (e *env) iptSave(t *testing.T, v6 bool) string {
	t.Helper()
	bin := "iptables-save"
	if v6 {
		bin = "ip6tables-save"
	}
	out, err := testutil.In(context.Background(), e.Host, bin)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func wantPeer(t *testing.T, what, got string, err error, want net.IP) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if !net.ParseIP(got).Equal(want) {
		t.Fatalf("%s: server saw peer %s, want %s", what, got, want)
	}
}

func wantFail(t *testing.T, what string, got string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: connected (server saw %s), want failure", what, got)
	}
}

var backends = []string{portmap.BackendNftables, portmap.BackendIptables}

func TestTCPFromOutsideHostAndLocalhost(t *testing.T) {
	for _, be := range backends {
		t.Run(be, func(t *testing.T) {
			e := newEnv(t)
			c1 := e.AddContainer(t, e.br, 2)
			testnet.Serve(t, c1.NS, 80)
			cfg := conf(t, "1.0.0", c1, []pm{tcp(8080, 80)}, pm{"backend": be})
			res := e.mustAdd(t, "c1", cfg)
			if len(res.IPs) != 2 || len(res.Interfaces) != 3 {
				t.Fatalf("prevResult not passed through: %+v", res)
			}
			got, err := testnet.DialTCP(e.Ext, testnet.HostPort(testnet.HostExtIP4, 8080))
			wantPeer(t, "external -> host IP", got, err, testnet.ExtIP4) // no SNAT for outside clients
			got, err = testnet.DialTCP(e.Ext, testnet.HostPort(testnet.HostExtIP6, 8080))
			wantPeer(t, "external -> host IPv6", got, err, testnet.ExtIP6)
			got, err = testnet.DialTCP(e.Host, "127.0.0.1:8080")
			wantPeer(t, "host -> localhost", got, err, e.br.GW4.IP) // masqueraded to the bridge address
			got, err = testnet.DialTCP(e.Host, testnet.HostPort(testnet.HostExtIP4, 8080))
			wantPeer(t, "host -> own IP", got, err, testnet.HostExtIP4)
			e.mustDel(t, "c1", cfg)
			got, err = testnet.DialTCP(e.Ext, testnet.HostPort(testnet.HostExtIP4, 8080))
			wantFail(t, "after DEL", got, err)
		})
	}
}

func TestUDPAndStaleConntrack(t *testing.T) {
	for _, be := range backends {
		t.Run(be, func(t *testing.T) {
			e := newEnv(t)
			c1 := e.AddContainer(t, e.br, 2)
			testnet.Serve(t, c1.NS, 53)
			target := testnet.HostPort(testnet.HostExtIP4, 5353)
			// Before the mapping exists, a datagram leaves a conntrack
			// entry without NAT for this 5-tuple; ADD must flush it.
			if got, err := testnet.ExchangeUDPFrom(e.Ext, 40000, target); err == nil {
				t.Fatalf("UDP answered before ADD (peer %s)", got)
			}
			e.mustAdd(t, "c1", conf(t, "1.0.0", c1, []pm{udp(5353, 53)}, pm{"backend": be}))
			got, err := testnet.ExchangeUDPFrom(e.Ext, 40000, target)
			wantPeer(t, "UDP through mapping, same 5-tuple as before ADD", got, err, testnet.ExtIP4)
			got, err = testnet.ExchangeUDP(e.Ext, testnet.HostPort(testnet.HostExtIP6, 5353))
			wantPeer(t, "UDP over IPv6", got, err, testnet.ExtIP6)
		})
	}
}

func TestHostIPRestriction(t *testing.T) {
	for _, be := range backends {
		t.Run(be, func(t *testing.T) {
			e := newEnv(t)
			c1 := e.AddContainer(t, e.br, 2)
			testnet.Serve(t, c1.NS, 80)
			maps := []pm{
				{"hostPort": 8081, "containerPort": 80, "protocol": "tcp", "hostIP": testnet.HostExtIP4.String()},
				{"hostPort": 8082, "containerPort": 80, "protocol": "tcp", "hostIP": "0.0.0.0"},
				{"hostPort": 8083, "containerPort": 80, "protocol": "tcp", "hostIP": testnet.HostExtIP6.String()},
			}
			e.mustAdd(t, "c1", conf(t, "1.0.0", c1, maps, pm{"backend": be}))
			got, err := testnet.DialTCP(e.Ext, testnet.HostPort(testnet.HostExtIP4, 8081))
			wantPeer(t, "to the mapped host IP", got, err, testnet.ExtIP4)
			got, err = testnet.DialTCP(e.Host, testnet.HostPort(e.br.GW4.IP, 8081))
			wantFail(t, "to another host address", got, err)
			got, err = testnet.DialTCP(e.Host, testnet.HostPort(e.br.GW4.IP, 8082))
			wantPeer(t, "0.0.0.0 maps every IPv4 address", got, err, e.br.GW4.IP)
			got, err = testnet.DialTCP(e.Ext, testnet.HostPort(testnet.HostExtIP6, 8082))
			wantFail(t, "0.0.0.0 does not map IPv6", got, err)
			got, err = testnet.DialTCP(e.Ext, testnet.HostPort(testnet.HostExtIP6, 8083))
			wantPeer(t, "to the mapped IPv6 host IP", got, err, testnet.ExtIP6)
			got, err = testnet.DialTCP(e.Host, testnet.HostPort(e.br.GW6.IP, 8083))
			wantFail(t, "to another IPv6 host address", got, err)
		})
	}
}

func TestHairpin(t *testing.T) {
	for _, be := range backends {
		t.Run(be, func(t *testing.T) {
			e := newEnv(t)
			c1 := e.AddContainer(t, e.br, 2)
			c2 := e.AddContainer(t, e.br, 3)
			testnet.Serve(t, c1.NS, 80)
			e.mustAdd(t, "c1", conf(t, "1.0.0", c1, []pm{tcp(8080, 80)}, pm{"backend": be}))
			got, err := testnet.DialTCP(c1.NS, testnet.HostPort(testnet.HostExtIP4, 8080))
			wantPeer(t, "container to its own host port", got, err, e.br.GW4.IP)
			got, err = testnet.DialTCP(c1.NS, testnet.HostPort(testnet.HostExtIP6, 8080))
			wantPeer(t, "container to its own host port over IPv6", got, err, e.br.GW6.IP)
			got, err = testnet.DialTCP(c2.NS, testnet.HostPort(testnet.HostExtIP4, 8080))
			wantPeer(t, "neighbour on the bridge to the host port", got, err, e.br.GW4.IP)
		})
	}
}

// TestForwardedTrafficNotIntercepted guards against the reference's #1209:
// a connection the host only forwards, to another machine's port that
// happens to be a mapped host port, must not be redirected.
func TestForwardedTrafficNotIntercepted(t *testing.T) {
	for _, be := range backends {
		t.Run(be, func(t *testing.T) {
			e := newEnv(t)
			c1 := e.AddContainer(t, e.br, 2) // mapped, but serves nothing: a DNAT would be refused
			c2 := e.AddContainer(t, e.br, 3)
			testnet.Serve(t, c2.NS, 8080)
			e.mustAdd(t, "c1", conf(t, "1.0.0", c1, []pm{tcp(8080, 80)}, pm{"backend": be}))
			got, err := testnet.DialTCP(e.Ext, testnet.HostPort(c2.IP4.IP, 8080))
			wantPeer(t, "forwarded IPv4 to c2:8080", got, err, testnet.ExtIP4)
			got, err = testnet.DialTCP(e.Ext, testnet.HostPort(c2.IP6.IP, 8080))
			wantPeer(t, "forwarded IPv6 to c2:8080", got, err, testnet.ExtIP6)
		})
	}
}

func TestDelOneOfTwoAndTwice(t *testing.T) {
	for _, be := range backends {
		t.Run(be, func(t *testing.T) {
			e := newEnv(t)
			c1 := e.AddContainer(t, e.br, 2)
			c2 := e.AddContainer(t, e.br, 3)
			testnet.Serve(t, c1.NS, 80)
			testnet.Serve(t, c2.NS, 80)
			cfg1 := conf(t, "1.0.0", c1, []pm{tcp(8080, 80)}, pm{"backend": be})
			cfg2 := conf(t, "1.0.0", c2, []pm{tcp(8090, 80)}, pm{"backend": be})
			e.mustAdd(t, "c1", cfg1)
			e.mustAdd(t, "c2", cfg2)
			e.mustDel(t, "c1", cfg1)
			e.mustDel(t, "c1", cfg1) // idempotent
			got, err := testnet.DialTCP(e.Ext, testnet.HostPort(testnet.HostExtIP4, 8080))
			wantFail(t, "deleted mapping", got, err)
			got, err = testnet.DialTCP(e.Ext, testnet.HostPort(testnet.HostExtIP4, 8090))
			wantPeer(t, "remaining mapping", got, err, testnet.ExtIP4)
			e.wantOwners(t, be, map[string]bool{"net1/c1/eth0": false, "net1/c2/eth0": true})
			e.mustDel(t, "c2", cfg2)
			e.wantOwners(t, be, map[string]bool{"net1/c2/eth0": false})
			if be == portmap.BackendNftables {
				if s := e.nft(t, "list", "table", "inet", portmap.NftTable); leftovers(s) {
					t.Fatalf("state left after DEL of every owner:\n%s", s)
				}
			}
		})
	}
}

// leftovers reports map elements or ownership records in an nft listing.
func leftovers(s string) bool {
	return strings.Contains(s, "elements =") || strings.Contains(s, "chain o-") || strings.Contains(s, "chain k-")
}

// wantOwners checks which owners have rules in the host namespace.
func (e *env) wantOwners(t *testing.T, be string, want map[string]bool) {
	t.Helper()
	var state string
	if be == portmap.BackendNftables {
		state = e.nft(t, "list", "ruleset")
	} else {
		state = e.iptSave(t, false) + e.iptSave(t, true)
	}
	for owner, present := range want {
		if strings.Contains(state, owner) != present {
			t.Errorf("owner %s present=%v, want %v in:\n%s", owner, !present, present, state)
		}
	}
}

// TestSharedHostPort: a stale attachment and a new one claiming the same
// host port (the runtime never deleted the first). The newest holds the
// port; deleting either never takes it from the other.
func TestSharedHostPort(t *testing.T) {
	for _, be := range backends {
		t.Run(be, func(t *testing.T) {
			e := newEnv(t)
			c1 := e.AddContainer(t, e.br, 2)
			c2 := e.AddContainer(t, e.br, 3)
			c3 := e.AddContainer(t, e.br, 4)
			testnet.Serve(t, c1.NS, 80) // only c1 serves: reaching c2 or c3 fails
			cfg := func(c *testnet.Container) []byte {
				return conf(t, "1.0.0", c, []pm{tcp(8080, 80)}, pm{"backend": be})
			}
			dial := func(what string, want bool) {
				t.Helper()
				got, err := testnet.DialTCPTimeout(e.Ext, testnet.HostPort(testnet.HostExtIP4, 8080), 500*time.Millisecond)
				if want {
					wantPeer(t, what, got, err, testnet.ExtIP4)
				} else {
					wantFail(t, what, got, err)
				}
			}
			e.mustAdd(t, "c2", cfg(c2))
			e.mustAdd(t, "c1", cfg(c1))
			dial("newest claimant (c1) holds the port", true)
			e.mustDel(t, "c2", cfg(c2))
			dial("after DEL of the older claimant", true)
			e.mustAdd(t, "c3", cfg(c3))
			dial("a newer claimant (c3) takes it", false)
			e.mustDel(t, "c3", cfg(c3))
			dial("after DEL of the newest, the port is back with c1", true)
			e.mustDel(t, "c1", cfg(c1))
			dial("after DEL of every claimant", false)
		})
	}
}

func TestGC(t *testing.T) {
	for _, be := range backends {
		t.Run(be, func(t *testing.T) {
			e := newEnv(t)
			c1 := e.AddContainer(t, e.br, 2)
			c2 := e.AddContainer(t, e.br, 3)
			c3 := e.AddContainer(t, e.br, 4)
			testnet.Serve(t, c2.NS, 80)
			e.mustAdd(t, "c1", conf(t, "1.1.0", c1, []pm{tcp(8080, 80)}, pm{"backend": be}))
			e.mustAdd(t, "c2", conf(t, "1.1.0", c2, []pm{tcp(8090, 80)}, pm{"backend": be}))
			other := conf(t, "1.1.0", c3, []pm{tcp(8070, 80)}, pm{"backend": be, "name": "net2"})
			e.mustAdd(t, "c3", other)
			gc := func(network string, valid ...string) {
				t.Helper()
				var atts []pm
				for _, id := range valid {
					atts = append(atts, pm{"containerID": id, "ifname": "eth0"})
				}
				cfg := testnet.Config(t, "1.1.0", pm{"name": network, "type": "portmap", "backend": be,
					"cni.dev/valid-attachments": atts}, nil)
				if _, err := e.call(t, &cni.Request{Command: cni.CmdGC, Config: cfg}); err != nil {
					t.Fatalf("GC: %v", err)
				}
			}
			gc("net1", "c2")
			e.wantOwners(t, be, map[string]bool{"net1/c1/eth0": false, "net1/c2/eth0": true, "net2/c3/eth0": true})
			got, err := testnet.DialTCP(e.Ext, testnet.HostPort(testnet.HostExtIP4, 8090))
			wantPeer(t, "valid attachment after GC", got, err, testnet.ExtIP4)
			gc("net1")
			gc("net2")
			e.wantOwners(t, be, map[string]bool{"net1/c2/eth0": false, "net2/c3/eth0": false})
			if be == portmap.BackendNftables && strings.Contains(e.nft(t, "list", "tables"), portmap.NftTable) {
				t.Fatal("table left after GC removed every owner")
			}
		})
	}
}

func TestNoMappingsNoWork(t *testing.T) {
	testutil.RequireRoot(t)
	tp := testnet.New(t)
	br := tp.AddBridge(t, "br0", "10.10.0.1/24", "")
	c1 := tp.AddContainer(t, br, 2)
	for _, p := range []portmap.Plugin{{HostNS: tp.Host.Path()}, {HostNS: "/nonexistent/netns"}} {
		for _, maps := range [][]pm{nil, {}} {
			cfg := conf(t, "1.0.0", c1, maps, nil)
			res, err := cni.Call(context.Background(), p, testnet.Request(cni.CmdAdd, "c1", cfg))
			if err != nil {
				t.Fatalf("ADD without mappings (host %q): %v", p.HostNS, err)
			}
			if cur, _ := cni.AsCurrent(res); len(cur.IPs) != 1 {
				t.Fatalf("prevResult not passed through: %+v", res)
			}
			for _, cmd := range []cni.Command{cni.CmdCheck, cni.CmdDel} {
				if _, err := cni.Call(context.Background(), p, testnet.Request(cmd, "c1", cfg)); err != nil {
					t.Fatalf("%s without mappings: %v", cmd, err)
				}
			}
		}
	}
	out, _ := exec.Command("nsenter", "--net="+tp.Host.Path(), "nft", "list", "tables").CombinedOutput()
	if strings.TrimSpace(string(out)) != "" {
		t.Fatalf("tables created for a pod without mappings: %s", out)
	}
}

func TestFailedAddLeavesNothing(t *testing.T) {
	t.Run("nftables", func(t *testing.T) {
		e := newEnv(t)
		c1 := e.AddContainer(t, e.br, 2)
		// A conflicting chain of the wrong type makes the transaction fail
		// after the owner's rules were queued.
		e.nft(t, "add", "table", "inet", portmap.NftTable)
		e.nft(t, "add", "chain", "inet", portmap.NftTable, "prerouting", "{ type filter hook prerouting priority 0 ; }")
		_, err := e.call(t, testnet.Request(cni.CmdAdd, "c1", conf(t, "1.0.0", c1, []pm{tcp(8080, 80)}, nil)))
		if err == nil {
			t.Fatal("ADD succeeded against a conflicting chain")
		}
		if s := e.nft(t, "list", "table", "inet", portmap.NftTable); leftovers(s) || strings.Contains(s, "dn4") {
			t.Fatalf("failed ADD left state:\n%s", s)
		}
	})
	t.Run("iptables", func(t *testing.T) {
		e := newEnv(t)
		c1 := e.AddContainer(t, e.br, 2)
		cfg := conf(t, "1.0.0", c1, []pm{tcp(8080, 80)}, pm{"backend": "iptables", "externalSetMarkChain": "NO-SUCH-CHAIN"})
		if _, err := e.call(t, testnet.Request(cni.CmdAdd, "c1", cfg)); err == nil {
			t.Fatal("ADD succeeded with a missing external mark chain")
		}
		for _, v6 := range []bool{false, true} {
			if s := e.iptSave(t, v6); strings.Contains(s, "KNIT-DN-") || strings.Contains(s, "net1/c1") {
				t.Fatalf("failed ADD left rules:\n%s", s)
			}
		}
	})
}

func TestConditions(t *testing.T) {
	e := newEnv(t)
	c1 := e.AddContainer(t, e.br, 2)
	testnet.Serve(t, c1.NS, 80)
	e.mustAdd(t, "c1", conf(t, "1.0.0", c1, []pm{tcp(8080, 80)}, pm{
		"conditionsV4": []string{"ip", "saddr", "!=", testnet.ExtIP4.String()},
		"conditionsV6": []string{`iifname != "ext0"`},
	}))
	got, err := testnet.DialTCP(e.Ext, testnet.HostPort(testnet.HostExtIP4, 8080))
	wantFail(t, "excluded IPv4 source", got, err)
	got, err = testnet.DialTCP(e.Ext, testnet.HostPort(testnet.HostExtIP6, 8080))
	wantFail(t, "excluded IPv6 input interface", got, err)
	got, err = testnet.DialTCP(e.Host, "127.0.0.1:8080")
	wantPeer(t, "other sources still mapped", got, err, e.br.GW4.IP)
}

func TestSNATOptions(t *testing.T) {
	for _, be := range backends {
		t.Run(be, func(t *testing.T) {
			e := newEnv(t)
			c1 := e.AddContainer(t, e.br, 2)
			testnet.Serve(t, c1.NS, 80)
			e.mustAdd(t, "c1", conf(t, "1.0.0", c1, []pm{tcp(8080, 80)}, pm{"backend": be, "masqAll": true, "markMasqBit": 5}))
			got, err := testnet.DialTCP(e.Ext, testnet.HostPort(testnet.HostExtIP4, 8080))
			wantPeer(t, "masqAll masquerades outside clients", got, err, e.br.GW4.IP)
			var state string
			if be == portmap.BackendNftables {
				state = e.nft(t, "list", "table", "inet", portmap.NftTable)
			} else {
				state = e.iptSave(t, false)
			}
			if !strings.Contains(state, "0x00000020") && !strings.Contains(state, "0x20/0x20") {
				t.Fatalf("markMasqBit 5 not used:\n%s", state)
			}
			c2 := e.AddContainer(t, e.br, 3)
			testnet.Serve(t, c2.NS, 80)
			e.mustAdd(t, "c2", conf(t, "1.0.0", c2, []pm{tcp(8090, 80)}, pm{"backend": be, "snat": false}))
			got, err = testnet.DialTCP(e.Ext, testnet.HostPort(testnet.HostExtIP4, 8090))
			wantPeer(t, "snat=false keeps the source", got, err, testnet.ExtIP4)
			got, err = testnet.DialTCPTimeout(e.Host, "127.0.0.1:8090", 500*time.Millisecond)
			wantFail(t, "snat=false: localhost cannot be answered", got, err)
			got, err = testnet.DialTCP(e.Ext, testnet.HostPort(testnet.HostExtIP4, 8080))
			wantPeer(t, "masqAll mapping after another config's ADD", got, err, e.br.GW4.IP)
		})
	}
}

func TestCheck(t *testing.T) {
	for _, be := range backends {
		t.Run(be, func(t *testing.T) {
			e := newEnv(t)
			c1 := e.AddContainer(t, e.br, 2)
			cfg := conf(t, "1.0.0", c1, []pm{tcp(8080, 80), udp(5353, 53)}, pm{"backend": be})
			e.mustAdd(t, "c1", cfg)
			if _, err := e.call(t, testnet.Request(cni.CmdCheck, "c1", cfg)); err != nil {
				t.Fatalf("CHECK after ADD: %v", err)
			}
			other := conf(t, "1.0.0", c1, []pm{tcp(9999, 80)}, pm{"backend": be})
			if _, err := e.call(t, testnet.Request(cni.CmdCheck, "c1", other)); err == nil {
				t.Fatal("CHECK passed for a mapping that was never added")
			}
			e.mustDel(t, "c1", cfg)
			if _, err := e.call(t, testnet.Request(cni.CmdCheck, "c1", cfg)); err == nil {
				t.Fatal("CHECK passed after DEL")
			}
		})
	}
}

func TestReAddReplaces(t *testing.T) {
	for _, be := range backends {
		t.Run(be, func(t *testing.T) {
			e := newEnv(t)
			c1 := e.AddContainer(t, e.br, 2)
			testnet.Serve(t, c1.NS, 80)
			e.mustAdd(t, "c1", conf(t, "1.0.0", c1, []pm{tcp(8080, 80)}, pm{"backend": be}))
			cfg := conf(t, "1.0.0", c1, []pm{tcp(8081, 80)}, pm{"backend": be})
			e.mustAdd(t, "c1", cfg)
			got, err := testnet.DialTCP(e.Ext, testnet.HostPort(testnet.HostExtIP4, 8080))
			wantFail(t, "mapping of the replaced ADD", got, err)
			got, err = testnet.DialTCP(e.Ext, testnet.HostPort(testnet.HostExtIP4, 8081))
			wantPeer(t, "mapping of the second ADD", got, err, testnet.ExtIP4)
			if _, err := e.call(t, testnet.Request(cni.CmdCheck, "c1", cfg)); err != nil {
				t.Fatalf("CHECK after re-ADD: %v", err)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	p := portmap.Plugin{HostNS: "/nonexistent/netns"} // nothing may touch a namespace
	prev := `"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"address":"10.0.0.2/24","interface":0}]}`
	cases := []struct {
		name, body string
		code       uint
	}{
		{"bad json", `{"cniVersion":`, types.ErrDecodingFailure},
		{"wrong type", `"markMasqBit":"13",` + prev, types.ErrDecodingFailure},
		{"unknown version", `"cniVersion":"9.9.9",` + prev, types.ErrIncompatibleCNIVersion},
		{"no prevResult", `"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"protocol":"tcp"}]}`, types.ErrInvalidNetworkConfig},
		{"mark bit", `"markMasqBit":32,` + prev, types.ErrInvalidNetworkConfig},
		{"negative mark bit", `"markMasqBit":-1,` + prev, types.ErrInvalidNetworkConfig},
		{"mark bit and chain", `"markMasqBit":3,"externalSetMarkChain":"X","backend":"iptables",` + prev, types.ErrInvalidNetworkConfig},
		{"external chain with nftables", `"externalSetMarkChain":"KUBE-MARK-MASQ",` + prev, types.ErrInvalidNetworkConfig},
		{"backend", `"backend":"pf",` + prev, types.ErrInvalidNetworkConfig},
		{"host port 0", `"runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":80,"protocol":"tcp"}]},` + prev, types.ErrInvalidNetworkConfig},
		{"container port too big", `"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":70000,"protocol":"tcp"}]},` + prev, types.ErrInvalidNetworkConfig},
		{"protocol", `"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"protocol":"icmp"}]},` + prev, types.ErrInvalidNetworkConfig},
		{"host IP", `"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"protocol":"tcp","hostIP":"nope"}]},` + prev, types.ErrInvalidNetworkConfig},
		{"iptables-style condition with nftables", `"conditionsV4":["!","-d","192.0.2.0/24"],` + prev, types.ErrInvalidNetworkConfig},
		{"IPv6 match in conditionsV4", `"conditionsV4":["ip6 saddr ::1"],` + prev, types.ErrInvalidNetworkConfig},
	}
	for _, c := range cases {
		body := c.body
		if !strings.HasPrefix(body, "{") {
			if !strings.HasPrefix(body, `"cniVersion"`) {
				body = `"cniVersion":"1.0.0",` + body
			}
			body = `{"name":"net1","type":"portmap",` + body + "}"
		}
		for _, cmd := range []cni.Command{cni.CmdAdd, cni.CmdDel} {
			if cmd == cni.CmdDel && c.name == "no prevResult" {
				continue // DEL needs no prevResult
			}
			_, err := cni.Call(context.Background(), p, testnet.Request(cmd, "c1", []byte(body)))
			if got := cni.AsTypesError(err); err == nil || got.Code != c.code {
				t.Errorf("%s %s: error %v, want code %d", cmd, c.name, err, c.code)
			} else if c.code == types.ErrInvalidNetworkConfig && !strings.Contains(got.Msg, ":") {
				t.Errorf("%s %s: message %q names no field", cmd, c.name, got.Msg)
			}
		}
	}
}

func TestEveryVersionExec(t *testing.T) {
	testutil.RequireRoot(t)
	dir := testutil.PluginDir(t)
	for _, v := range cni.SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			e := newEnv(t)
			bin := testutil.InHost(t, e.Host.Path(), dir+"/portmap")
			c1 := e.AddContainer(t, e.br, 2)
			testnet.Serve(t, c1.NS, 80)
			cfg := conf(t, v, c1, []pm{tcp(8080, 80)}, nil)
			r := testnet.Request(cni.CmdAdd, "c1", cfg)
			out, err := testutil.Exec(context.Background(), bin, r)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			var got, want map[string]any
			var whole map[string]json.RawMessage
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			_ = json.Unmarshal(cfg, &whole)
			_ = json.Unmarshal(whole["prevResult"], &want)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("result %s\nwant prevResult %s", out, whole["prevResult"])
			}
			got2, err := testnet.DialTCP(e.Ext, testnet.HostPort(testnet.HostExtIP4, 8080))
			wantPeer(t, "mapped port", got2, err, testnet.ExtIP4)
			if v >= "0.4.0" {
				r.Command = cni.CmdCheck
				if _, err := testutil.Exec(context.Background(), bin, r); err != nil {
					t.Fatalf("CHECK: %v", err)
				}
			}
			r.Command = cni.CmdDel
			for range 2 {
				if _, err := testutil.Exec(context.Background(), bin, r); err != nil {
					t.Fatalf("DEL: %v", err)
				}
			}
			got2, err = testnet.DialTCP(e.Ext, testnet.HostPort(testnet.HostExtIP4, 8080))
			wantFail(t, "after DEL", got2, err)
		})
	}
}

// TestConcurrentInProcess runs many ADDs and DELs at once in one process,
// as knitd does, sharing a connection pool.
func TestConcurrentInProcess(t *testing.T) {
	testutil.RequireRoot(t)
	host := testnet.NewNS(t)
	pool := &hostns.NFTPool{}
	t.Cleanup(pool.Close)
	p := portmap.Plugin{HostNS: host.Path(), Conns: pool}
	const n = 24
	run := func(cmd cni.Command) {
		t.Helper()
		errs := make(chan error, n)
		for i := range n {
			go func() {
				r, err := portmaptest.Request(i, "1.0.0", "conc", nil)
				if err == nil {
					r.Command = cmd
					_, err = cni.Call(context.Background(), p, r)
				}
				errs <- err
			}()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Fatalf("%s: %v", cmd, err)
			}
		}
	}
	run(cni.CmdAdd)
	out, _ := exec.Command("nsenter", "--net="+host.Path(), "nft", "list", "map", "inet", portmap.NftTable, "dn4").CombinedOutput()
	for i := range n {
		if !strings.Contains(string(out), fmt.Sprintf("tcp . %d", portmaptest.BasePort+i)) {
			t.Fatalf("mapping of container %d missing after concurrent ADDs:\n%s", i, out)
		}
	}
	run(cni.CmdDel)
	out, _ = exec.Command("nsenter", "--net="+host.Path(), "nft", "list", "table", "inet", portmap.NftTable).CombinedOutput()
	if leftovers(string(out)) {
		t.Fatalf("state left after concurrent DELs:\n%s", out)
	}
}
