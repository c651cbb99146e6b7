package sbr_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/chaintest"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/knit-cni/knit/pkg/sysctl"
	"github.com/knit-cni/knit/pkg/testutil"
)

// topo is a container with two interfaces on two subnets behind one
// router ("host"), which reaches a remote network and enforces strict
// reverse-path filtering: a packet from net1's address that leaves through
// eth0 is dropped, so a ping from it works only with source routing.
type topo struct {
	main, second *chaintest.Attachment
	remote       *testutil.NS
}

const remoteIP = "192.168.50.2"

func newTopo(t *testing.T) *topo {
	t.Helper()
	m := chaintest.NewVeth(t, chaintest.VethOpts{HostIf: "hv1", ContIf: "eth0", HostAddr: "10.1.0.1/24", ContAddr: "10.1.0.2/24"})
	s := chaintest.NewVeth(t, chaintest.VethOpts{Host: m.Host, Cont: m.Cont, HostIf: "hv2", ContIf: "net1",
		HostAddr: "10.2.0.1/24", ContAddr: "10.2.0.2/24", NoDefaultRoute: true})
	// A route the main plugin set up through net1: sbr moves it too.
	_, extra, _ := net.ParseCIDR("10.99.0.0/16")
	net1 := chaintest.LinkByName(t, m.Cont, "net1")
	if err := m.Cont.H.RouteAdd(&netlink.Route{LinkIndex: net1.Attrs().Index, Dst: extra, Gw: s.HostAddr.IP}); err != nil {
		t.Fatal(err)
	}
	s.Result.Routes = []*types.Route{{Dst: *extra, GW: s.HostAddr.IP}}
	r := testutil.NewNS(t)
	chaintest.Veth(t, m.Host, "up0", r, "eth0")
	chaintest.AddAddr(t, m.Host, "up0", mustCIDR("192.168.50.1/24"))
	chaintest.AddAddr(t, r, "eth0", mustCIDR(remoteIP+"/24"))
	dflt := &netlink.Route{LinkIndex: chaintest.LinkByName(t, r, "eth0").Attrs().Index, Gw: net.ParseIP("192.168.50.1")}
	if err := r.H.RouteAdd(dflt); err != nil {
		t.Fatal(err)
	}
	err := m.Host.Do(func() error {
		for _, k := range []string{"net/ipv4/ip_forward", "net/ipv4/conf/all/rp_filter", "net/ipv4/conf/hv1/rp_filter", "net/ipv4/conf/hv2/rp_filter"} {
			if err := sysctl.Set(k, "1"); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return &topo{main: m, second: s, remote: r}
}

func mustCIDR(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return n
}

func run(t *testing.T, bin string, a *chaintest.Attachment, cmd cni.Command, req *cni.Request) ([]byte, error) {
	t.Helper()
	r := *req
	r.Command = cmd
	return testutil.ExecIn(context.Background(), a.Host, bin, &r)
}

func wantCode(t *testing.T, err error, code uint) {
	t.Helper()
	var te *types.Error
	if !errors.As(err, &te) || te.Code != code {
		t.Fatalf("error %v, want a CNI error with code %d", err, code)
	}
}

// rules returns "from <src> table <n>" for the namespace's source rules.
func rules(t *testing.T, ns *testutil.NS) []string {
	t.Helper()
	rs, err := nlsafe.RuleList(ns.H, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		if r.Src != nil {
			out = append(out, fmt.Sprintf("from %s table %d", r.Src, r.Table))
		}
	}
	sort.Strings(out)
	return out
}

// routes returns "<dst> via <gw> dev <name>" for a table, sorted, without
// IPv6 link-local and multicast routes.
func routes(t *testing.T, ns *testutil.NS, table int) []string {
	t.Helper()
	rs, err := nlsafe.RouteListFiltered(ns.H, netlink.FAMILY_ALL, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		name := "?"
		if l, err := ns.H.LinkByIndex(r.LinkIndex); err == nil {
			name = l.Attrs().Name
		}
		dst := "default"
		if ones, _ := maskOf(r.Dst); ones != 0 {
			if r.Dst.IP.IsLinkLocalUnicast() || r.Dst.IP.IsMulticast() {
				continue
			}
			dst = r.Dst.String()
		}
		out = append(out, fmt.Sprintf("%s via %v dev %s", dst, r.Gw, name))
	}
	sort.Strings(out)
	return out
}

func maskOf(n *net.IPNet) (int, int) {
	if n == nil {
		return 0, 0
	}
	return n.Mask.Size()
}

// outIf is the interface the container routes dst through from src.
func outIf(t *testing.T, ns *testutil.NS, dst, src string) string {
	t.Helper()
	rs, err := ns.H.RouteGetWithOptions(net.ParseIP(dst), &netlink.RouteGetOptions{SrcAddr: net.ParseIP(src)})
	if err != nil {
		t.Fatalf("route get %s from %s: %v", dst, src, err)
	}
	l, err := ns.H.LinkByIndex(rs[0].LinkIndex)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Name
}

func TestSourceRoutingEveryVersion(t *testing.T) {
	testutil.RequireRoot(t)
	bin := filepath.Join(testutil.PluginDir(t), "sbr")
	for _, v := range cni.SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			tp := newTopo(t)
			c := tp.main.Cont
			// eth0's address first: it resolves the gateway's MAC. The
			// other way round, the ARP request carries net1's address,
			// which the router's reverse-path filter drops too.
			if err := testutil.Ping(c, remoteIP, "10.1.0.2"); err != nil {
				t.Fatalf("ping from eth0's address: %v", err)
			}
			if err := testutil.Ping(c, remoteIP, "10.2.0.2"); err == nil {
				t.Fatal("ping from net1's address worked without sbr: the topology proves nothing")
			}
			conf := chaintest.Conf(t, v, "sbrnet", `{"type":"sbr"}`, tp.second.Result)
			req := &cni.Request{Command: cni.CmdAdd, ContainerID: "c1", Netns: c.Path(), IfName: "net1", Config: conf}
			out, err := run(t, bin, tp.main, cni.CmdAdd, req)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			res := testutil.DecodeResult(t, conf, out)
			if got, want := jsonOf(res), jsonOf(tp.second.Result); got != want {
				t.Fatalf("result %s, want prevResult %s", got, want)
			}
			if got := rules(t, c); fmt.Sprint(got) != "[from 10.2.0.2/32 table 100]" {
				t.Fatalf("rules %v", got)
			}
			wantT := "[10.2.0.0/24 via <nil> dev net1 10.99.0.0/16 via 10.2.0.1 dev net1 default via 10.2.0.1 dev net1]"
			if got := routes(t, c, 100); fmt.Sprint(got) != wantT {
				t.Fatalf("table 100: %v\nwant %s", got, wantT)
			}
			if got := routes(t, c, unix.RT_TABLE_MAIN); strings.Contains(fmt.Sprint(got), "net1") {
				t.Fatalf("main still routes through net1: %v", got)
			}
			if o := outIf(t, c, remoteIP, "10.2.0.2"); o != "net1" {
				t.Fatalf("from 10.2.0.2 the container routes via %s", o)
			}
			if o := outIf(t, c, remoteIP, "10.1.0.2"); o != "eth0" {
				t.Fatalf("from 10.1.0.2 the container routes via %s", o)
			}
			if err := testutil.Ping(c, remoteIP, "10.2.0.2"); err != nil {
				t.Fatalf("ping from net1's address with sbr: %v", err)
			}
			if v >= "0.4.0" {
				req.Config = chaintest.Conf(t, v, "sbrnet", `{"type":"sbr"}`, res)
				if _, err := run(t, bin, tp.main, cni.CmdCheck, req); err != nil {
					t.Fatalf("CHECK: %v", err)
				}
			}
			for range 2 {
				if _, err := run(t, bin, tp.main, cni.CmdDel, req); err != nil {
					t.Fatalf("DEL: %v", err)
				}
			}
			if got := rules(t, c); len(got) != 0 {
				t.Fatalf("rules after DEL: %v", got)
			}
			if got := routes(t, c, 100); len(got) != 0 {
				t.Fatalf("table 100 after DEL: %v", got)
			}
		})
	}
}

func jsonOf(r *current.Result) string {
	c := *r
	c.CNIVersion = ""
	b, _ := json.Marshal(&c)
	return string(b)
}

func TestCheckDetectsMissingRule(t *testing.T) {
	testutil.RequireRoot(t)
	bin := filepath.Join(testutil.PluginDir(t), "sbr")
	tp := newTopo(t)
	c := tp.main.Cont
	req := &cni.Request{ContainerID: "c1", Netns: c.Path(), IfName: "net1", Config: chaintest.Conf(t, "1.1.0", "sbrnet", `{"type":"sbr"}`, tp.second.Result)}
	if _, err := run(t, bin, tp.main, cni.CmdAdd, req); err != nil {
		t.Fatal(err)
	}
	rs, _ := nlsafe.RuleList(c.H, netlink.FAMILY_V4)
	for _, r := range rs {
		if r.Src != nil {
			if err := c.H.RuleDel(&r); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := run(t, bin, tp.main, cni.CmdCheck, req); err == nil || !strings.Contains(err.Error(), "no rule") {
		t.Fatalf("CHECK without the rule: %v", err)
	}
}

func TestNextFreeTable(t *testing.T) {
	testutil.RequireRoot(t)
	bin := filepath.Join(testutil.PluginDir(t), "sbr")
	tp := newTopo(t)
	c := tp.main.Cont
	taken := netlink.NewRule()
	taken.Table, taken.Src = 100, mustCIDR("1.2.3.4/32")
	if err := c.H.RuleAdd(taken); err != nil {
		t.Fatal(err)
	}
	// A route in table 101 takes that one too.
	lo := chaintest.LinkByName(t, c, "lo")
	if err := c.H.RouteAdd(&netlink.Route{LinkIndex: lo.Attrs().Index, Dst: mustCIDR("10.200.0.0/16"), Table: 101}); err != nil {
		t.Fatal(err)
	}
	req := &cni.Request{ContainerID: "c1", Netns: c.Path(), IfName: "net1", Config: chaintest.Conf(t, "1.0.0", "sbrnet", `{"type":"sbr"}`, tp.second.Result)}
	if _, err := run(t, bin, tp.main, cni.CmdAdd, req); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(rules(t, c)); got != "[from 1.2.3.4/32 table 100 from 10.2.0.2/32 table 102]" {
		t.Fatalf("rules %s", got)
	}
	// DEL removes only its own rule.
	if _, err := run(t, bin, tp.main, cni.CmdDel, req); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(rules(t, c)); got != "[from 1.2.3.4/32 table 100]" {
		t.Fatalf("rules after DEL %s", got)
	}
}

// TestConfiguredTable: with "table", the previous plugin placed the
// routes there (CNI 1.1 route tables); sbr only adds the rules.
func TestConfiguredTable(t *testing.T) {
	testutil.RequireRoot(t)
	bin := filepath.Join(testutil.PluginDir(t), "sbr")
	tp := newTopo(t)
	c := tp.main.Cont
	net1 := chaintest.LinkByName(t, c, "net1")
	if err := c.H.RouteAdd(&netlink.Route{LinkIndex: net1.Attrs().Index, Gw: net.ParseIP("10.2.0.1"), Table: 5001}); err != nil {
		t.Fatal(err)
	}
	mainBefore := routes(t, c, unix.RT_TABLE_MAIN)
	req := &cni.Request{ContainerID: "c1", Netns: c.Path(), IfName: "net1", Config: chaintest.Conf(t, "1.1.0", "sbrnet", `{"type":"sbr","table":5001}`, tp.second.Result)}
	if _, err := run(t, bin, tp.main, cni.CmdAdd, req); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(rules(t, c)); got != "[from 10.2.0.2/32 table 5001]" {
		t.Fatalf("rules %s", got)
	}
	if got := routes(t, c, unix.RT_TABLE_MAIN); fmt.Sprint(got) != fmt.Sprint(mainBefore) {
		t.Fatalf("main table changed: %v, was %v", got, mainBefore)
	}
	if err := testutil.Ping(c, remoteIP, "10.2.0.2"); err != nil {
		t.Fatalf("ping via table 5001: %v", err)
	}
	if _, err := run(t, bin, tp.main, cni.CmdCheck, req); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if _, err := run(t, bin, tp.main, cni.CmdDel, req); err != nil {
		t.Fatal(err)
	}
	if got := rules(t, c); len(got) != 0 {
		t.Fatalf("rules after DEL %v", got)
	}
	if got := routes(t, c, 5001); len(got) != 1 {
		t.Fatalf("DEL removed the previous plugin's table routes: %v", got)
	}
}

func TestDualStack(t *testing.T) {
	testutil.RequireRoot(t)
	bin := filepath.Join(testutil.PluginDir(t), "sbr")
	tp := newTopo(t)
	c := tp.main.Cont
	chaintest.AddAddr(t, tp.main.Host, "hv2", mustCIDR("fd00:2::1/64"))
	chaintest.AddAddr(t, c, "net1", mustCIDR("fd00:2::2/64"))
	prev := tp.second.Result
	prev.IPs = append(prev.IPs, &current.IPConfig{Interface: current.Int(1), Address: *mustCIDR("fd00:2::2/64"), Gateway: net.ParseIP("fd00:2::1")})
	req := &cni.Request{ContainerID: "c1", Netns: c.Path(), IfName: "net1", Config: chaintest.Conf(t, "0.4.0", "sbrnet", `{"type":"sbr"}`, prev)}
	if _, err := run(t, bin, tp.main, cni.CmdAdd, req); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(rules(t, c)); got != "[from 10.2.0.2/32 table 100 from fd00:2::2/128 table 100]" {
		t.Fatalf("rules %s", got)
	}
	tbl := fmt.Sprint(routes(t, c, 100))
	for _, want := range []string{"default via fd00:2::1 dev net1", "fd00:2::/64 via <nil> dev net1", "default via 10.2.0.1 dev net1"} {
		if !strings.Contains(tbl, want) {
			t.Errorf("table 100 %s lacks %q", tbl, want)
		}
	}
	if _, err := run(t, bin, tp.main, cni.CmdCheck, req); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if _, err := run(t, bin, tp.main, cni.CmdDel, req); err != nil {
		t.Fatal(err)
	}
	if got := rules(t, c); len(got) != 0 {
		t.Fatalf("rules after DEL %v", got)
	}
}

// TestFailureRollsBack: a gateway the interface cannot reach makes the
// default route fail after the rule is in: the rule goes and main keeps
// its routes.
func TestFailureRollsBack(t *testing.T) {
	testutil.RequireRoot(t)
	bin := filepath.Join(testutil.PluginDir(t), "sbr")
	tp := newTopo(t)
	c := tp.main.Cont
	mainBefore := routes(t, c, unix.RT_TABLE_MAIN)
	prev := tp.second.Result
	prev.IPs[0].Gateway = net.ParseIP("10.250.0.1")
	req := &cni.Request{ContainerID: "c1", Netns: c.Path(), IfName: "net1", Config: chaintest.Conf(t, "1.0.0", "sbrnet", `{"type":"sbr"}`, prev)}
	if _, err := run(t, bin, tp.main, cni.CmdAdd, req); err == nil {
		t.Fatal("ADD with an unreachable gateway succeeded")
	}
	if got := rules(t, c); len(got) != 0 {
		t.Fatalf("rules left by a failed ADD: %v", got)
	}
	if got := routes(t, c, unix.RT_TABLE_MAIN); fmt.Sprint(got) != fmt.Sprint(mainBefore) {
		t.Fatalf("main after failed ADD %v, want %v", got, mainBefore)
	}
	if got := routes(t, c, 100); len(got) != 0 {
		t.Fatalf("table 100 after failed ADD %v", got)
	}
}

func TestInvalid(t *testing.T) {
	testutil.RequireRoot(t)
	bin := filepath.Join(testutil.PluginDir(t), "sbr")
	tp := newTopo(t)
	c := tp.main.Cont
	noIPs := &current.Result{CNIVersion: "1.0.0", Interfaces: []*current.Interface{{Name: "net1", Sandbox: c.Path()}}}
	cases := []struct {
		name, body string
		prev       types.Result
		code       uint
	}{
		{"no prevResult", `{"type":"sbr"}`, nil, 7},
		{"no addresses", `{"type":"sbr"}`, noIPs, 7},
		{"table zero", `{"type":"sbr","table":0}`, tp.second.Result, 7},
		{"table main", `{"type":"sbr","table":254}`, tp.second.Result, 7},
		{"table string", `{"type":"sbr","table":"x"}`, tp.second.Result, 6},
	}
	for _, cs := range cases {
		t.Run(cs.name, func(t *testing.T) {
			req := &cni.Request{Command: cni.CmdAdd, ContainerID: "c1", Netns: c.Path(), IfName: "net1", Config: chaintest.Conf(t, "1.0.0", "sbrnet", cs.body, cs.prev)}
			_, err := run(t, bin, tp.main, cni.CmdAdd, req)
			wantCode(t, err, cs.code)
			if got := rules(t, c); len(got) != 0 {
				t.Fatalf("rules %v", got)
			}
		})
	}
}

// TestDelAfterLinkAndNamespaceGone: rules outlive their link; DEL finds
// them through prevResult. Without a namespace DEL succeeds.
func TestDelAfterLinkAndNamespaceGone(t *testing.T) {
	testutil.RequireRoot(t)
	bin := filepath.Join(testutil.PluginDir(t), "sbr")
	tp := newTopo(t)
	c := tp.main.Cont
	req := &cni.Request{ContainerID: "c1", Netns: c.Path(), IfName: "net1", Config: chaintest.Conf(t, "1.0.0", "sbrnet", `{"type":"sbr"}`, tp.second.Result)}
	if _, err := run(t, bin, tp.main, cni.CmdAdd, req); err != nil {
		t.Fatal(err)
	}
	if err := c.H.LinkDel(chaintest.LinkByName(t, c, "net1")); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, bin, tp.main, cni.CmdDel, req); err != nil {
		t.Fatalf("DEL after the link went: %v", err)
	}
	if got := rules(t, c); len(got) != 0 {
		t.Fatalf("rules after DEL %v", got)
	}
	for _, ns := range []string{"", "/var/run/netns/knit-no-such-ns"} {
		req.Netns = ns
		if _, err := run(t, bin, tp.main, cni.CmdDel, req); err != nil {
			t.Fatalf("DEL with netns %q: %v", ns, err)
		}
	}
}

// TestConcurrentInterfaces: two interfaces of one pod set up at once get
// two tables.
func TestConcurrentInterfaces(t *testing.T) {
	testutil.RequireRoot(t)
	bin := filepath.Join(testutil.PluginDir(t), "sbr")
	tp := newTopo(t)
	c := tp.main.Cont
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, a := range []*chaintest.Attachment{tp.main, tp.second} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := &cni.Request{Command: cni.CmdAdd, ContainerID: "c1", Netns: c.Path(), IfName: a.ContIf, Config: chaintest.Conf(t, "1.0.0", "sbrnet", `{"type":"sbr"}`, a.Result)}
			_, errs[i] = testutil.ExecIn(context.Background(), a.Host, bin, req)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	got := rules(t, c)
	if len(got) != 2 || got[0][len(got[0])-3:] == got[1][len(got[1])-3:] {
		t.Fatalf("rules %v: want two different tables", got)
	}
}

// TestSideBySideWithReference compares rules and tables with the
// reference sbr's after ADD and after DEL.
func TestSideBySideWithReference(t *testing.T) {
	testutil.RequireRoot(t)
	ref := testutil.RequireRef(t, "sbr")
	bin := filepath.Join(testutil.PluginDir(t), "sbr")
	state := func(bin string) (added, deleted string) {
		tp := newTopo(t)
		c := tp.main.Cont
		req := &cni.Request{ContainerID: "c1", Netns: c.Path(), IfName: "net1", Config: chaintest.Conf(t, "1.0.0", "sbrnet", `{"type":"sbr"}`, tp.second.Result)}
		if _, err := run(t, bin, tp.main, cni.CmdAdd, req); err != nil {
			t.Fatalf("%s ADD: %v", bin, err)
		}
		added = fmt.Sprint(rules(t, c), routes(t, c, 100), routes(t, c, unix.RT_TABLE_MAIN))
		if _, err := run(t, bin, tp.main, cni.CmdDel, req); err != nil {
			t.Fatalf("%s DEL: %v", bin, err)
		}
		return added, fmt.Sprint(rules(t, c))
	}
	ka, kd := state(bin)
	ra, rd := state(ref)
	if ka != ra || kd != rd {
		t.Fatalf("knit and reference differ:\nknit ADD %s DEL %s\nref  ADD %s DEL %s", ka, kd, ra, rd)
	}
}

// TestGCLeavesRules: sbr's state lives in the container namespace; GC has
// nothing to remove and must not touch live rules, but still rejects a
// broken config.
func TestGCLeavesRules(t *testing.T) {
	testutil.RequireRoot(t)
	bin := filepath.Join(testutil.PluginDir(t), "sbr")
	tp := newTopo(t)
	c := tp.main.Cont
	req := &cni.Request{ContainerID: "c1", Netns: c.Path(), IfName: "net1", Config: chaintest.Conf(t, "1.1.0", "sbrnet", `{"type":"sbr"}`, tp.second.Result)}
	if _, err := run(t, bin, tp.main, cni.CmdAdd, req); err != nil {
		t.Fatal(err)
	}
	gc := []byte(`{"cniVersion":"1.1.0","name":"sbrnet","type":"sbr","cni.dev/valid-attachments":[]}`)
	if _, err := run(t, bin, tp.main, cni.CmdGC, &cni.Request{Config: gc}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if got := rules(t, c); len(got) != 1 {
		t.Fatalf("rules after GC %v", got)
	}
	_, err := run(t, bin, tp.main, cni.CmdGC, &cni.Request{Config: []byte(`{"cniVersion":"1.1.0","name":"sbrnet","type":"sbr","table":-3}`)})
	wantCode(t, err, types.ErrInvalidNetworkConfig)
}
