package bandwidth_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/chaintest"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/knit-cni/knit/pkg/testutil"
)

func run(t *testing.T, bin string, a *chaintest.Attachment, cmd cni.Command, req *cni.Request) ([]byte, error) {
	t.Helper()
	r := *req
	r.Command = cmd
	return testutil.ExecIn(context.Background(), a.Host, bin, &r)
}

func wantCode(t *testing.T, err error, code uint) {
	t.Helper()
	var te *types.Error
	if !errors.As(err, &te) {
		t.Fatalf("error %v, want a CNI error with code %d", err, code)
	}
	if te.Code != code {
		t.Fatalf("error code %d (%s), want %d", te.Code, te.Msg, code)
	}
}

// ifbs lists the ifb links in ns.
func ifbs(t *testing.T, ns *testutil.NS) []netlink.Link {
	t.Helper()
	links, err := nlsafe.LinkList(ns.H)
	if err != nil {
		t.Fatal(err)
	}
	var out []netlink.Link
	for _, l := range links {
		if l.Type() == "ifb" {
			out = append(out, l)
		}
	}
	return out
}

// qdiscKinds lists the non-default qdiscs of a link ("tbf", "ingress").
func qdiscKinds(t *testing.T, ns *testutil.NS, name string) []string {
	t.Helper()
	qs, err := nlsafe.QdiscList(ns.H, chaintest.LinkByName(t, ns, name))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, q := range qs {
		if k := q.Type(); k != "noqueue" && k != "pfifo_fast" && k != "mq" {
			out = append(out, k)
		}
	}
	return out
}

func tbfOf(t *testing.T, ns *testutil.NS, name string) *netlink.Tbf {
	t.Helper()
	qs, err := nlsafe.QdiscList(ns.H, chaintest.LinkByName(t, ns, name))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if tb, ok := q.(*netlink.Tbf); ok {
			return tb
		}
	}
	t.Fatalf("no TBF on %s", name)
	return nil
}

const limitsBody = `{"type":"bandwidth","ingressRate":8000000,"ingressBurst":400000,"egressRate":4000000,"egressBurst":200000}`

func TestAddCheckDelEveryVersion(t *testing.T) {
	testutil.RequireRoot(t)
	bin := filepath.Join(testutil.PluginDir(t), "bandwidth")
	for _, v := range cni.SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			a := chaintest.NewVeth(t, chaintest.VethOpts{})
			conf := chaintest.Conf(t, v, "bwnet", limitsBody, a.Result)
			req := &cni.Request{Command: cni.CmdAdd, ContainerID: "c1", Netns: a.Cont.Path(), IfName: "eth0", Config: conf}
			out, err := run(t, bin, a, cni.CmdAdd, req)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			res := testutil.DecodeResult(t, conf, out)
			ifb := ifbs(t, a.Host)
			if len(ifb) != 1 {
				t.Fatalf("ifbs after ADD: %d", len(ifb))
			}
			if len(res.Interfaces) != 3 || res.Interfaces[2].Name != ifb[0].Attrs().Name ||
				res.Interfaces[2].Mac != ifb[0].Attrs().HardwareAddr.String() || res.Interfaces[2].Sandbox != "" {
				t.Fatalf("result interfaces %+v, want prevResult's plus the ifb", res.Interfaces)
			}
			if len(res.IPs) != 1 || res.IPs[0].Address.String() != a.ContAddr.String() {
				t.Fatalf("ips not passed through: %+v", res.IPs)
			}
			if got := tbfOf(t, a.Host, "hveth0"); got.Rate != 1_000_000 {
				t.Fatalf("ingress TBF rate %d B/s, want 1000000", got.Rate)
			}
			if got := tbfOf(t, a.Host, ifb[0].Attrs().Name); got.Rate != 500_000 {
				t.Fatalf("egress TBF rate %d B/s, want 500000", got.Rate)
			}
			if k := qdiscKinds(t, a.Host, "hveth0"); len(k) != 2 {
				t.Fatalf("host veth qdiscs %v, want tbf and ingress", k)
			}
			if ifb[0].Attrs().MTU != chaintest.LinkByName(t, a.Host, "hveth0").Attrs().MTU {
				t.Errorf("ifb MTU %d differs from the host veth's", ifb[0].Attrs().MTU)
			}
			if v >= "0.4.0" {
				req.Config = chaintest.Conf(t, v, "bwnet", limitsBody, res)
				if _, err := run(t, bin, a, cni.CmdCheck, req); err != nil {
					t.Fatalf("CHECK: %v", err)
				}
			}
			for range 2 {
				if _, err := run(t, bin, a, cni.CmdDel, req); err != nil {
					t.Fatalf("DEL: %v", err)
				}
			}
			if n := len(ifbs(t, a.Host)); n != 0 {
				t.Fatalf("%d ifbs left after DEL", n)
			}
			if k := qdiscKinds(t, a.Host, "hveth0"); len(k) != 0 {
				t.Fatalf("qdiscs left on the host veth after DEL: %v", k)
			}
		})
	}
}

func TestCheckDetectsDrift(t *testing.T) {
	testutil.RequireRoot(t)
	bin := filepath.Join(testutil.PluginDir(t), "bandwidth")
	a := chaintest.NewVeth(t, chaintest.VethOpts{})
	req := &cni.Request{ContainerID: "c1", Netns: a.Cont.Path(), IfName: "eth0", Config: chaintest.Conf(t, "1.1.0", "bwnet", limitsBody, a.Result)}
	out, err := run(t, bin, a, cni.CmdAdd, req)
	if err != nil {
		t.Fatal(err)
	}
	res := testutil.DecodeResult(t, req.Config, out)
	req.Config = chaintest.Conf(t, "1.1.0", "bwnet", limitsBody, res)
	// Someone deletes the redirect: CHECK must notice.
	if err := a.Host.H.QdiscDel(&netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: chaintest.LinkByName(t, a.Host, "hveth0").Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_INGRESS}}); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, bin, a, cni.CmdCheck, req); err == nil || !strings.Contains(err.Error(), "redirect") {
		t.Fatalf("CHECK without the redirect: %v", err)
	}
	// Another rate in the config than installed.
	req.Config = chaintest.Conf(t, "1.1.0", "bwnet", strings.Replace(limitsBody, "8000000", "9000000", 1), res)
	if _, err := run(t, bin, a, cni.CmdCheck, req); err == nil || !strings.Contains(err.Error(), "TBF") {
		t.Fatalf("CHECK with another rate: %v", err)
	}
}

func TestRuntimeConfig(t *testing.T) {
	testutil.RequireRoot(t)
	bin := filepath.Join(testutil.PluginDir(t), "bandwidth")
	a := chaintest.NewVeth(t, chaintest.VethOpts{})
	body := `{"type":"bandwidth","runtimeConfig":{"bandwidth":{"ingressRate":16000000,"ingressBurst":160000}}}`
	req := &cni.Request{ContainerID: "c1", Netns: a.Cont.Path(), IfName: "eth0", Config: chaintest.Conf(t, "1.0.0", "bwnet", body, a.Result)}
	out, err := run(t, bin, a, cni.CmdAdd, req)
	if err != nil {
		t.Fatal(err)
	}
	if got := tbfOf(t, a.Host, "hveth0"); got.Rate != 2_000_000 {
		t.Fatalf("TBF rate %d, want 2000000 B/s", got.Rate)
	}
	// Ingress only: no ifb, prevResult unchanged.
	if n := len(ifbs(t, a.Host)); n != 0 {
		t.Fatalf("%d ifbs for an ingress-only limit", n)
	}
	if res := testutil.DecodeResult(t, req.Config, out); len(res.Interfaces) != 2 {
		t.Fatalf("interfaces %+v", res.Interfaces)
	}
}

func TestNoLimitsPassesThrough(t *testing.T) {
	testutil.RequireRoot(t)
	bin := filepath.Join(testutil.PluginDir(t), "bandwidth")
	a := chaintest.NewVeth(t, chaintest.VethOpts{})
	conf := chaintest.Conf(t, "0.4.0", "bwnet", `{"type":"bandwidth","ingressRate":0,"ingressBurst":0}`, a.Result)
	req := &cni.Request{ContainerID: "c1", Netns: a.Cont.Path(), IfName: "eth0", Config: conf}
	out, err := run(t, bin, a, cni.CmdAdd, req)
	if err != nil {
		t.Fatal(err)
	}
	res := testutil.DecodeResult(t, conf, out)
	want, _ := json.Marshal(a.Result)
	res.CNIVersion = a.Result.CNIVersion
	if got, _ := json.Marshal(res); string(got) != string(want) {
		t.Fatalf("result %s, want prevResult %s", got, want)
	}
	if k := qdiscKinds(t, a.Host, "hveth0"); len(k) != 0 {
		t.Fatalf("qdiscs installed without limits: %v", k)
	}
}

func TestInvalidConfigsChangeNothing(t *testing.T) {
	testutil.RequireRoot(t)
	bin := filepath.Join(testutil.PluginDir(t), "bandwidth")
	a := chaintest.NewVeth(t, chaintest.VethOpts{})
	cases := []struct {
		name, body string
		code       uint
	}{
		{"rate without burst", `{"ingressRate":1000000,"egressRate":1000,"egressBurst":1000}`, 7},
		{"burst without rate", `{"egressBurst":1000}`, 7},
		{"burst too big", `{"ingressRate":1000000,"ingressBurst":40000000000}`, 7},
		{"rate too small", `{"ingressRate":7,"ingressBurst":1000}`, 7},
		{"drain overflow", `{"egressRate":8,"egressBurst":80000000}`, 7},
		{"runtime rate without burst", `{"runtimeConfig":{"bandwidth":{"egressRate":5}}}`, 7},
		{"subnets", `{"ingressRate":1000000,"ingressBurst":10000,"unshapedSubnets":["10.0.0.0/8"]}`, 2},
		{"negative", `{"ingressRate":-1,"ingressBurst":10000}`, 6},
		{"no prevResult", `{"ingressRate":1000000,"ingressBurst":10000,"noprev":1}`, 7},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var prev types.Result = a.Result
			if strings.Contains(c.body, "noprev") {
				prev = nil
			}
			body := strings.Replace(c.body, "{", `{"type":"bandwidth",`, 1)
			req := &cni.Request{Command: cni.CmdAdd, ContainerID: "c1", Netns: a.Cont.Path(), IfName: "eth0", Config: chaintest.Conf(t, "1.0.0", "bwnet", body, prev)}
			_, err := run(t, bin, a, cni.CmdAdd, req)
			wantCode(t, err, c.code)
			if k := qdiscKinds(t, a.Host, "hveth0"); len(k) != 0 || len(ifbs(t, a.Host)) != 0 {
				t.Fatalf("failed ADD left qdiscs %v or ifbs", k)
			}
		})
	}
}

// TestMacvlanHasNoPeer: a macvlan has no host end to shape on.
func TestMacvlanHasNoPeer(t *testing.T) {
	testutil.RequireRoot(t)
	bin := filepath.Join(testutil.PluginDir(t), "bandwidth")
	host, cont, peer := testutil.NewNS(t), testutil.NewNS(t), testutil.NewNS(t)
	testutil.Veth(t, host, "uplink", peer, "sw0")
	parent := chaintest.LinkByName(t, host, "uplink")
	mv := &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: "mv0", ParentIndex: parent.Attrs().Index,
		Namespace: netlink.NsFd(cont.Fd())}, Mode: netlink.MACVLAN_MODE_BRIDGE}
	if err := host.H.LinkAdd(mv); err != nil {
		t.Fatal(err)
	}
	prev := &current.Result{CNIVersion: "1.0.0", Interfaces: []*current.Interface{{Name: "eth0", Sandbox: cont.Path()}}}
	if err := cont.H.LinkSetName(chaintest.LinkByName(t, cont, "mv0"), "eth0"); err != nil {
		t.Fatal(err)
	}
	a := &chaintest.Attachment{Host: host, Cont: cont}
	req := &cni.Request{ContainerID: "c1", Netns: cont.Path(), IfName: "eth0", Config: chaintest.Conf(t, "1.0.0", "bwnet", limitsBody, prev)}
	_, err := run(t, bin, a, cni.CmdAdd, req)
	wantCode(t, err, types.ErrInvalidNetworkConfig)
	if !strings.Contains(err.Error(), "macvlan") || !strings.Contains(err.Error(), "veth") {
		t.Fatalf("error %q should say the interface is a macvlan and a veth is needed", err)
	}
	if len(ifbs(t, host)) != 0 || len(qdiscKinds(t, host, "uplink")) != 0 {
		t.Fatal("failed ADD left something behind")
	}
}

// TestFailureRollsBack: when the ifb cannot be created (a foreign link has
// its name) the ingress TBF installed before is removed and the foreign
// link is left alone.
func TestFailureRollsBack(t *testing.T) {
	testutil.RequireRoot(t)
	bin := filepath.Join(testutil.PluginDir(t), "bandwidth")
	a := chaintest.NewVeth(t, chaintest.VethOpts{})
	req := &cni.Request{ContainerID: "c1", Netns: a.Cont.Path(), IfName: "eth0", Config: chaintest.Conf(t, "1.0.0", "bwnet", limitsBody, a.Result)}
	// Learn the ifb name, then block it with a foreign ifb.
	out, err := run(t, bin, a, cni.CmdAdd, req)
	if err != nil {
		t.Fatal(err)
	}
	name := testutil.DecodeResult(t, req.Config, out).Interfaces[2].Name
	if _, err := run(t, bin, a, cni.CmdDel, req); err != nil {
		t.Fatal(err)
	}
	foreign := &netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := a.Host.H.LinkAdd(foreign); err != nil {
		t.Fatal(err)
	}
	if err := a.Host.H.LinkSetAlias(chaintest.LinkByName(t, a.Host, name), "someone else's"); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, bin, a, cni.CmdAdd, req); err == nil {
		t.Fatal("ADD succeeded over a foreign link")
	}
	if k := qdiscKinds(t, a.Host, "hveth0"); len(k) != 0 {
		t.Fatalf("failed ADD left qdiscs %v on the host veth", k)
	}
	if _, err := a.Host.H.LinkByName(name); err != nil {
		t.Fatalf("rollback deleted the foreign link: %v", err)
	}
	// Nor does DEL touch it.
	if _, err := run(t, bin, a, cni.CmdDel, req); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Host.H.LinkByName(name); err != nil {
		t.Fatalf("DEL deleted the foreign link: %v", err)
	}
}

func TestDelWithoutNamespace(t *testing.T) {
	testutil.RequireRoot(t)
	bin := filepath.Join(testutil.PluginDir(t), "bandwidth")
	a := chaintest.NewVeth(t, chaintest.VethOpts{})
	req := &cni.Request{ContainerID: "c1", Netns: a.Cont.Path(), IfName: "eth0", Config: chaintest.Conf(t, "1.0.0", "bwnet", limitsBody, a.Result)}
	if _, err := run(t, bin, a, cni.CmdAdd, req); err != nil {
		t.Fatal(err)
	}
	req.Netns = ""
	if _, err := run(t, bin, a, cni.CmdDel, req); err != nil {
		t.Fatalf("DEL without netns: %v", err)
	}
	if n := len(ifbs(t, a.Host)); n != 0 {
		t.Fatalf("%d ifbs left", n)
	}
}

func TestGC(t *testing.T) {
	testutil.RequireRoot(t)
	bin := filepath.Join(testutil.PluginDir(t), "bandwidth")
	host := testutil.NewNS(t)
	add := func(cid, network string, n int) {
		a := chaintest.NewVeth(t, chaintest.VethOpts{Host: host, HostIf: fmt.Sprintf("hv%d", n),
			HostAddr: fmt.Sprintf("10.77.%d.1/24", n), ContAddr: fmt.Sprintf("10.77.%d.2/24", n)})
		req := &cni.Request{ContainerID: cid, Netns: a.Cont.Path(), IfName: "eth0", Config: chaintest.Conf(t, "1.1.0", network, limitsBody, a.Result)}
		if _, err := run(t, bin, a, cni.CmdAdd, req); err != nil {
			t.Fatal(err)
		}
	}
	add("keep", "bwnet", 1)
	add("gone", "bwnet", 2)
	add("other", "othernet", 3)
	if n := len(ifbs(t, host)); n != 3 {
		t.Fatalf("%d ifbs, want 3", n)
	}
	gc := `{"cniVersion":"1.1.0","name":"bwnet","type":"bandwidth","cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}]}`
	if _, err := testutil.ExecIn(context.Background(), host, bin, &cni.Request{Command: cni.CmdGC, Config: []byte(gc)}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	var left []string
	for _, l := range ifbs(t, host) {
		left = append(left, l.Attrs().Alias)
	}
	if len(left) != 2 || !strings.Contains(strings.Join(left, " "), `"keep"`) || !strings.Contains(strings.Join(left, " "), `"othernet"`) {
		t.Fatalf("after GC: %v, want keep's and othernet's ifbs", left)
	}
}

// TestSideBySideWithReference compares the qdiscs knit installs with the
// reference plugin's for the same config.
func TestSideBySideWithReference(t *testing.T) {
	testutil.RequireRoot(t)
	ref := testutil.RequireRef(t, "bandwidth")
	bin := filepath.Join(testutil.PluginDir(t), "bandwidth")
	type tbfParams struct {
		Rate          uint64
		Buffer, Limit uint32
	}
	params := func(q *netlink.Tbf) tbfParams { return tbfParams{q.Rate, q.Buffer, q.Limit} }
	type shape struct {
		In, Out         tbfParams
		IfbMTU, NResult int
	}
	measure := func(bin string) shape {
		a := chaintest.NewVeth(t, chaintest.VethOpts{})
		req := &cni.Request{ContainerID: "c1", Netns: a.Cont.Path(), IfName: "eth0", Config: chaintest.Conf(t, "1.0.0", "bwnet", limitsBody, a.Result)}
		out, err := run(t, bin, a, cni.CmdAdd, req)
		if err != nil {
			t.Fatalf("%s: %v", bin, err)
		}
		res := testutil.DecodeResult(t, req.Config, out)
		ifb := ifbs(t, a.Host)
		if len(ifb) != 1 {
			t.Fatalf("%s: %d ifbs", bin, len(ifb))
		}
		return shape{In: params(tbfOf(t, a.Host, "hveth0")), Out: params(tbfOf(t, a.Host, ifb[0].Attrs().Name)),
			IfbMTU: ifb[0].Attrs().MTU, NResult: len(res.Interfaces)}
	}
	if k, r := measure(bin), measure(ref); k != r {
		t.Fatalf("knit and reference shape differently:\nknit %+v\nref  %+v", k, r)
	}
}

// TestRatesWithIperf measures the shaped rates with iperf3 in both
// directions: each must be within 15% of the configured rate.
func TestRatesWithIperf(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("iperf3 not installed")
	}
	bin := filepath.Join(testutil.PluginDir(t), "bandwidth")
	a := chaintest.NewVeth(t, chaintest.VethOpts{})
	const in, out = 6_000_000, 3_000_000
	body := fmt.Sprintf(`{"type":"bandwidth","ingressRate":%d,"ingressBurst":240000,"egressRate":%d,"egressBurst":120000}`, in, out)
	req := &cni.Request{ContainerID: "c1", Netns: a.Cont.Path(), IfName: "eth0", Config: chaintest.Conf(t, "1.1.0", "bwnet", body, a.Result)}
	if _, err := run(t, bin, a, cni.CmdAdd, req); err != nil {
		t.Fatal(err)
	}
	// Ingress: the host sends to a server in the container.
	got := iperf(t, a.Cont, a.Host, a.ContAddr.IP.String(), 5201)
	within(t, "ingress", got, in)
	// Egress: the container sends to a server on the host side.
	got = iperf(t, a.Host, a.Cont, a.HostAddr.IP.String(), 5202)
	within(t, "egress", got, out)
}

func within(t *testing.T, dir string, got float64, want int) {
	t.Helper()
	t.Logf("%s: measured %.2f Mbit/s, configured %.2f", dir, got/1e6, float64(want)/1e6)
	if d := (got - float64(want)) / float64(want); d > 0.15 || d < -0.15 {
		t.Fatalf("%s rate %.0f bit/s is %.0f%% off the configured %d", dir, got, d*100, want)
	}
}

// iperf runs an iperf3 server in srv and a 3 s TCP test (after a 1 s
// warm-up that the result omits) from cli to ip, returning the received
// bits per second.
func iperf(t *testing.T, srv, cli *testutil.NS, ip string, port int) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	server := exec.CommandContext(ctx, "nsenter", "--net="+srv.Path(), "iperf3", "-s", "-1", "-p", fmt.Sprint(port))
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	defer server.Wait() //nolint:errcheck // ends with the one test it serves
	defer cancel()
	var r struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		out, err := testutil.In(ctx, cli, "iperf3", "-c", ip, "-p", fmt.Sprint(port), "-t", "3", "-O", "1", "-J")
		r.Error = ""
		if jerr := json.Unmarshal(out, &r); jerr != nil {
			t.Fatalf("iperf3: %v %v: %s", err, jerr, out)
		}
		// The server may not listen yet: iperf3 reports that in its JSON.
		if strings.Contains(r.Error, "refused") && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond) // polling for the server's listen
			continue
		}
		if err != nil || r.Error != "" || r.End.SumReceived.BitsPerSecond == 0 {
			t.Fatalf("iperf3 measured nothing (%v, %s): %s", err, r.Error, out)
		}
		break
	}
	return r.End.SumReceived.BitsPerSecond
}
