package firewall_test

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/testnet"
	"github.com/knit-cni/knit/pkg/testutil"
	"github.com/knit-cni/knit/plugins/firewall"
)

// env: host namespace with bridges br0 (a1, a2) and br1 (b1), each
// container serving TCP on port 80, and an external client.
type env struct {
	*testnet.Topo
	br0, br1   *testnet.Bridge
	a1, a2, b1 *testnet.Container
	p          firewall.Plugin
}

func newEnv(t *testing.T) *env {
	t.Helper()
	testutil.RequireRoot(t)
	tp := testnet.New(t)
	e := &env{Topo: tp, p: firewall.Plugin{HostNS: tp.Host.Path()}}
	e.br0 = tp.AddBridge(t, "br0", "10.10.0.1/24", "fd00:10::1/64")
	e.br1 = tp.AddBridge(t, "br1", "10.11.0.1/24", "fd00:11::1/64")
	e.a1 = tp.AddContainer(t, e.br0, 2)
	e.a2 = tp.AddContainer(t, e.br0, 3)
	e.b1 = tp.AddContainer(t, e.br1, 2)
	for _, c := range []*testnet.Container{e.a1, e.a2, e.b1} {
		testnet.Serve(t, c.NS, 80)
	}
	return e
}

type m = map[string]any

func conf(t *testing.T, version string, c *testnet.Container, extra m) []byte {
	t.Helper()
	return testnet.ConfigFor(t, version, c, m{"name": "net1", "type": "firewall"}, extra)
}

func (e *env) call(t *testing.T, r *cni.Request) (types.Result, error) {
	t.Helper()
	return cni.Call(context.Background(), e.p, r)
}

func (e *env) mustAdd(t *testing.T, id string, c *testnet.Container, extra m) []byte {
	t.Helper()
	cfg := conf(t, "1.0.0", c, extra)
	if _, err := e.call(t, testnet.Request(cni.CmdAdd, id, cfg)); err != nil {
		t.Fatalf("ADD %s: %v", id, err)
	}
	return cfg
}

func (e *env) mustDel(t *testing.T, id string, cfg []byte) {
	t.Helper()
	if _, err := e.call(t, testnet.Request(cni.CmdDel, id, cfg)); err != nil {
		t.Fatalf("DEL %s: %v", id, err)
	}
}

// run runs a command in the host namespace.
func (e *env) run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := testutil.In(context.Background(), e.Host, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func (e *env) state(t *testing.T, be string) string {
	t.Helper()
	if be == firewall.BackendNftables {
		return e.run(t, "nft", "list", "ruleset")
	}
	return e.run(t, "iptables-save") + e.run(t, "ip6tables-save")
}

// reach asserts whether from can open a TCP connection to c (IPv4 and
// IPv6).
func reach(t *testing.T, what string, from *testutil.NS, c *testnet.Container, want bool) {
	t.Helper()
	for _, ip := range []string{c.IP4.IP.String(), "[" + c.IP6.IP.String() + "]"} {
		timeout := 2 * time.Second
		if !want {
			timeout = dropTimeout
		}
		_, err := testnet.DialTCPTimeout(from, ip+":80", timeout)
		if (err == nil) != want {
			t.Errorf("%s (%s): connected=%v, want %v (%v)", what, ip, err == nil, want, err)
		}
	}
}

// dropTimeout bounds the wait for a connection that should be dropped;
// allowed ones complete in well under a millisecond between namespaces.
const dropTimeout = 500 * time.Millisecond

var backends = []string{firewall.BackendNftables, firewall.BackendIptables}

// setDefaultDeny makes forwarding default-deny, so that only the plugin's
// accepts let pod traffic through: "policy drop" on knit's forward chain
// (nftables), or on FORWARD (iptables).
func (e *env) setDefaultDeny(t *testing.T, be string) {
	t.Helper()
	if be == firewall.BackendNftables {
		e.run(t, "nft", "add", "chain", "inet", firewall.NftTable, "forward", "{ policy drop ; }")
		return
	}
	e.run(t, "iptables", "-P", "FORWARD", "DROP")
	e.run(t, "ip6tables", "-P", "FORWARD", "DROP")
}

func TestOpenAllowsContainerTraffic(t *testing.T) {
	for _, be := range backends {
		t.Run(be, func(t *testing.T) {
			e := newEnv(t)
			cfg := e.mustAdd(t, "a1", e.a1, m{"backend": be})
			e.setDefaultDeny(t, be)
			// b1 has no rules of its own yet: only a1's let traffic by.
			reach(t, "a1 -> b1 (all out, replies established)", e.a1.NS, e.b1, true)
			reach(t, "b1 -> a1 (new connection in)", e.b1.NS, e.a1, false)
			e.mustAdd(t, "b1", e.b1, m{"backend": be})
			reach(t, "b1 -> a1 once b1 may send", e.b1.NS, e.a1, true)
			e.mustDel(t, "a1", cfg)
			reach(t, "a1 -> b1 after DEL a1 (b1's rules accept only its own new traffic)", e.a1.NS, e.b1, false)
		})
	}
}

func TestSameBridgePolicy(t *testing.T) {
	for _, be := range backends {
		t.Run(be, func(t *testing.T) {
			e := newEnv(t)
			pol := m{"backend": be, "ingressPolicy": "same-bridge"}
			e.mustAdd(t, "a1", e.a1, pol)
			e.mustAdd(t, "a2", e.a2, pol)
			e.mustAdd(t, "b1", e.b1, pol)
			reach(t, "a1 -> a2 (same bridge)", e.a1.NS, e.a2, true)
			reach(t, "a1 -> b1 (other bridge)", e.a1.NS, e.b1, false)
			reach(t, "b1 -> a1 (other bridge)", e.b1.NS, e.a1, false)
			reach(t, "external -> a1", e.Ext, e.a1, true)
			reach(t, "host -> b1", e.Host, e.b1, true)
		})
	}
}

func TestIsolatedPolicy(t *testing.T) {
	for _, be := range backends {
		t.Run(be, func(t *testing.T) {
			e := newEnv(t)
			e.mustAdd(t, "a1", e.a1, m{"backend": be, "ingressPolicy": "isolated"})
			e.mustAdd(t, "a2", e.a2, m{"backend": be, "ingressPolicy": "isolated"})
			e.mustAdd(t, "b1", e.b1, m{"backend": be}) // open: br1 has no policy
			reach(t, "a1 -> a2 (same isolated bridge)", e.a1.NS, e.a2, false)
			reach(t, "a1 -> b1 (to a bridge without policy)", e.a1.NS, e.b1, true)
			reach(t, "b1 -> a1 (from a bridge without policy)", e.b1.NS, e.a1, true)
			reach(t, "external -> a1", e.Ext, e.a1, true)
			e.mustAdd(t, "b1", e.b1, m{"backend": be, "ingressPolicy": "same-bridge"})
			reach(t, "a1 -> b1 once br1 has a policy", e.a1.NS, e.b1, false)
		})
	}
}

func TestDelRemovesOnlyOwnRules(t *testing.T) {
	for _, be := range backends {
		t.Run(be, func(t *testing.T) {
			e := newEnv(t)
			cfg := e.mustAdd(t, "a1", e.a1, m{"backend": be})
			e.mustAdd(t, "a2", e.a2, m{"backend": be})
			for _, owner := range []string{"net1/a1/eth0", "net1/a2/eth0"} {
				if !strings.Contains(e.state(t, be), owner) {
					t.Fatalf("no rules for %s after ADD", owner)
				}
			}
			// DEL as a 0.3.1 runtime sends it: no prevResult.
			old := conf(t, "0.3.1", nil, m{"backend": be})
			for range 2 {
				e.mustDel(t, "a1", old)
			}
			e.mustDel(t, "a1", cfg)
			s := e.state(t, be)
			if strings.Contains(s, "net1/a1/eth0") || strings.Contains(s, e.a1.IP4.IP.String()+"/32") {
				t.Fatalf("a1's rules left after DEL:\n%s", s)
			}
			if !strings.Contains(s, "net1/a2/eth0") {
				t.Fatalf("a2's rules gone after DEL of a1:\n%s", s)
			}
		})
	}
}

func TestAdminChainSurvives(t *testing.T) {
	for _, be := range backends {
		t.Run(be, func(t *testing.T) {
			e := newEnv(t)
			cfg := e.mustAdd(t, "a1", e.a1, m{"backend": be})
			reach(t, "b1 -> a1 before the admin rule", e.b1.NS, e.a1, true)
			if be == firewall.BackendNftables {
				e.run(t, "nft", "add", "rule", "inet", firewall.NftTable, "CNI-ADMIN", "ip", "daddr", e.a1.IP4.IP.String(), "drop")
			} else {
				e.run(t, "iptables", "-A", "CNI-ADMIN", "-d", e.a1.IP4.IP.String(), "-j", "DROP")
			}
			blocked := func(when string) {
				t.Helper()
				_, err := testnet.DialTCPTimeout(e.b1.NS, e.a1.IP4.IP.String()+":80", dropTimeout)
				if err == nil {
					t.Fatalf("admin drop rule not effective %s", when)
				}
			}
			blocked("after adding it")
			cfg2 := e.mustAdd(t, "a2", e.a2, m{"backend": be})
			e.mustDel(t, "a2", cfg2)
			e.mustDel(t, "a1", cfg)
			e.mustAdd(t, "a1", e.a1, m{"backend": be})
			blocked("after ADD/DEL cycles")
		})
	}
}

func TestGC(t *testing.T) {
	for _, be := range backends {
		t.Run(be, func(t *testing.T) {
			e := newEnv(t)
			e.mustAdd(t, "a1", e.a1, m{"backend": be})
			e.mustAdd(t, "a2", e.a2, m{"backend": be})
			e.mustAdd(t, "b1", e.b1, m{"backend": be, "name": "net2"})
			cfg := testnet.Config(t, "1.1.0", m{"name": "net1", "type": "firewall", "backend": be,
				"cni.dev/valid-attachments": []m{{"containerID": "a2", "ifname": "eth0"}}}, nil)
			if _, err := e.call(t, &cni.Request{Command: cni.CmdGC, Config: cfg}); err != nil {
				t.Fatalf("GC: %v", err)
			}
			s := e.state(t, be)
			for owner, want := range map[string]bool{"net1/a1/eth0": false, "net1/a2/eth0": true, "net2/b1/eth0": true} {
				if strings.Contains(s, owner) != want {
					t.Errorf("after GC, %s present=%v, want %v", owner, !want, want)
				}
			}
		})
	}
}

func TestBridgeGoneTakesPolicy(t *testing.T) {
	for _, be := range backends {
		t.Run(be, func(t *testing.T) {
			e := newEnv(t)
			cfg := e.mustAdd(t, "b1", e.b1, m{"backend": be, "ingressPolicy": "same-bridge"})
			if !strings.Contains(e.state(t, be), "br1") {
				t.Fatal("no ingress policy for br1")
			}
			l, _ := e.Host.H.LinkByName("br1")
			if err := e.Host.H.LinkDel(l); err != nil {
				t.Fatal(err)
			}
			e.mustDel(t, "b1", cfg)
			if s := e.state(t, be); strings.Contains(s, "br1") {
				t.Fatalf("policy of deleted bridge br1 left:\n%s", s)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	for _, be := range backends {
		t.Run(be, func(t *testing.T) {
			e := newEnv(t)
			cfg := e.mustAdd(t, "a1", e.a1, m{"backend": be, "ingressPolicy": "same-bridge"})
			if _, err := e.call(t, testnet.Request(cni.CmdCheck, "a1", cfg)); err != nil {
				t.Fatalf("CHECK after ADD: %v", err)
			}
			if _, err := e.call(t, testnet.Request(cni.CmdCheck, "a2", conf(t, "1.0.0", e.a2, m{"backend": be}))); err == nil {
				t.Fatal("CHECK passed for an attachment never added")
			}
			e.mustDel(t, "a1", cfg)
			if _, err := e.call(t, testnet.Request(cni.CmdCheck, "a1", cfg)); err == nil {
				t.Fatal("CHECK passed after DEL")
			}
		})
	}
}

func TestFailedAddLeavesNothing(t *testing.T) {
	e := newEnv(t)
	e.run(t, "nft", "add", "table", "inet", firewall.NftTable)
	e.run(t, "nft", "add", "chain", "inet", firewall.NftTable, "forward", "{ type nat hook prerouting priority -100 ; }")
	if _, err := e.call(t, testnet.Request(cni.CmdAdd, "a1", conf(t, "1.0.0", e.a1, nil))); err == nil {
		t.Fatal("ADD succeeded against a conflicting chain")
	}
	if s := e.run(t, "nft", "list", "ruleset"); strings.Contains(s, "elements =") || strings.Contains(s, "chain o-") || strings.Contains(s, "chain k-") {
		t.Fatalf("failed ADD left state:\n%s", s)
	}
}

func TestConfigErrors(t *testing.T) {
	p := firewall.Plugin{HostNS: "/nonexistent/netns"}
	prev := `"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"br0"}],"ips":[{"address":"10.0.0.2/24"}]}`
	cases := []struct {
		name, body string
		code       uint
	}{
		{"bad json", `{"cniVersion":`, types.ErrDecodingFailure},
		{"wrong type", `{"cniVersion":"1.0.0","name":"n","type":"firewall","backend":7,` + prev + `}`, types.ErrDecodingFailure},
		{"unknown version", `{"cniVersion":"0.9.0","name":"n","type":"firewall",` + prev + `}`, types.ErrIncompatibleCNIVersion},
		{"firewalld", `{"cniVersion":"1.0.0","name":"n","type":"firewall","backend":"firewalld","firewalldZone":"trusted",` + prev + `}`, types.ErrInvalidNetworkConfig},
		{"backend", `{"cniVersion":"1.0.0","name":"n","type":"firewall","backend":"pf",` + prev + `}`, types.ErrInvalidNetworkConfig},
		{"policy", `{"cniVersion":"1.0.0","name":"n","type":"firewall","ingressPolicy":"closed",` + prev + `}`, types.ErrInvalidNetworkConfig},
		{"admin chain", `{"cniVersion":"1.0.0","name":"n","type":"firewall","iptablesAdminChainName":"A B",` + prev + `}`, types.ErrInvalidNetworkConfig},
		{"admin chain reserved", `{"cniVersion":"1.0.0","name":"n","type":"firewall","iptablesAdminChainName":"forward",` + prev + `}`, types.ErrInvalidNetworkConfig},
	}
	for _, c := range cases {
		for _, cmd := range []cni.Command{cni.CmdAdd, cni.CmdDel} {
			_, err := cni.Call(context.Background(), p, testnet.Request(cmd, "c1", []byte(c.body)))
			if got := cni.AsTypesError(err); err == nil || got.Code != c.code {
				t.Errorf("%s %s: error %v, want code %d", cmd, c.name, err, c.code)
			}
		}
	}
	noPrev := `{"cniVersion":"1.0.0","name":"n","type":"firewall"}`
	if _, err := cni.Call(context.Background(), p, testnet.Request(cni.CmdAdd, "c1", []byte(noPrev))); cni.AsTypesError(err).Code != types.ErrInvalidNetworkConfig {
		t.Errorf("ADD without prevResult: %v, want code 7", err)
	}
	sameBridgeNoIfaces := `{"cniVersion":"1.0.0","name":"n","type":"firewall","ingressPolicy":"same-bridge","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}}`
	if _, err := cni.Call(context.Background(), p, testnet.Request(cni.CmdAdd, "c1", []byte(sameBridgeNoIfaces))); cni.AsTypesError(err).Code != types.ErrInvalidNetworkConfig {
		t.Errorf("same-bridge without interfaces: %v, want code 7", err)
	}
}

func TestEveryVersionExec(t *testing.T) {
	testutil.RequireRoot(t)
	dir := testutil.PluginDir(t)
	for _, v := range cni.SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			e := newEnv(t)
			bin := testutil.InHost(t, e.Host.Path(), dir+"/firewall")
			cfg := conf(t, v, e.a1, m{"ingressPolicy": "same-bridge"})
			r := testnet.Request(cni.CmdAdd, "a1", cfg)
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
			if !strings.Contains(e.run(t, "nft", "list", "ruleset"), "net1/a1/eth0") {
				t.Fatal("no rules after exec'd ADD")
			}
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
			if strings.Contains(e.run(t, "nft", "list", "ruleset"), "net1/a1/eth0") {
				t.Fatal("rules left after exec'd DEL")
			}
		})
	}
}
