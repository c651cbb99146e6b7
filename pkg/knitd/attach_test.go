package knitd_test

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/knit-cni/knit/pkg/annotations"
)

// bridgeNAD is a bridge network with its own bridge and subnet.
func (e *env) bridgeNAD(ns, name, br, subnet string) {
	e.t.Helper()
	e.nad(ns, name, fmt.Sprintf(`{"cniVersion":"0.3.1","type":"bridge","bridge":%q,%s}`, br, e.ipam(subnet)), nil)
}

// Every comma form: name, ns/name, name@ifname, and the same NAD again;
// interfaces named net<N> by position; network-status per §5; one
// AddedInterface event per interface; DEL removes everything.
func TestCommaForms(t *testing.T) {
	e := newEnv(t)
	e.createNamespace("knit-other")
	e.bridgeNAD("", "net-a", "bra", "10.10.1.0/24")
	if _, err := e.nads.K8sCniCncfIoV1().NetworkAttachmentDefinitions("knit-other").Get(t.Context(), "net-b", getOpts); err != nil {
		e.bridgeNAD("knit-other", "net-b", "brb", "10.10.2.0/24")
	}
	p := e.pod("comma", map[string]string{annotations.NetworksKey: "net-a, knit-other/net-b@data0 ,net-a"})
	res := e.mustAdd(p)

	if len(res.IPs) != 1 || !strings.HasPrefix(res.IPs[0].Address.IP.String(), "10.244.0.") {
		t.Errorf("runtime result is not the cluster network's: %+v", res)
	}
	got := links(t, p.sandbox)
	slices.Sort(got)
	if want := []string{"data0", "eth0", "net1", "net3"}; !slices.Equal(got, want) {
		t.Fatalf("pod interfaces %v, want %v", got, want)
	}
	want := map[string]string{"eth0": "10.244.0.", "net1": "10.10.1.", "data0": "10.10.2.", "net3": "10.10.1."}
	for ifname, prefix := range want {
		a := addrs(t, p.sandbox, ifname)
		if len(a) != 1 || !strings.HasPrefix(a[0], prefix) {
			t.Errorf("%s addresses %v, want one in %s0/24", ifname, a, prefix)
		}
	}
	// net1 and net3 are one NAD: two allocations of one host-local network.
	if a1, a3 := addrs(t, p.sandbox, "net1"), addrs(t, p.sandbox, "net3"); len(a1) == 1 && len(a3) == 1 && a1[0] == a3[0] {
		t.Errorf("net1 and net3 share address %s", a1[0])
	}

	st := e.status(p)
	if len(st) != 4 {
		t.Fatalf("network-status has %d elements, want 4: %+v", len(st), st)
	}
	wantNames := []string{"cbr0", e.ns + "/net-a", "knit-other/net-b", e.ns + "/net-a"}
	wantIfs := []string{"eth0", "net1", "data0", "net3"}
	for i, s := range st {
		if s.Name != wantNames[i] || s.Interface != wantIfs[i] {
			t.Errorf("status[%d] = %s/%s, want %s/%s", i, s.Name, s.Interface, wantNames[i], wantIfs[i])
		}
		if s.Default != (i == 0) {
			t.Errorf("status[%d].default = %v", i, s.Default)
		}
		l := link(t, p.sandbox, s.Interface)
		if s.Mac != l.Attrs().HardwareAddr.String() {
			t.Errorf("status[%d].mac = %s, link has %s", i, s.Mac, l.Attrs().HardwareAddr)
		}
		if len(s.IPs) != 1 || net.ParseIP(s.IPs[0]) == nil || strings.Contains(s.IPs[0], "/") {
			t.Errorf("status[%d].ips = %v, want one address without prefix", i, s.IPs)
		}
	}
	checkDefaultRoutes(t, p, st)
	if len(st[0].DefaultRoute) != 1 || st[0].DefaultRoute[0] != "10.244.0.1" {
		t.Errorf("cluster default-route %v, want [10.244.0.1]", st[0].DefaultRoute)
	}
	evs := e.events(p, "AddedInterface", 4)
	msgs := ""
	for _, ev := range evs {
		msgs += ev.Message + "\n"
	}
	for _, w := range []string{"Add eth0 [10.244.0.", "Add net1 [10.10.1.", "Add data0 [10.10.2.", "from knit-other/net-b"} {
		if !strings.Contains(msgs, w) {
			t.Errorf("events lack %q:\n%s", w, msgs)
		}
	}

	if err := e.del(p); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if l := links(t, p.sandbox); len(l) != 0 {
		t.Errorf("links left after DEL: %v", l)
	}
	for _, nw := range []string{"cbr0", "net-a", "net-b"} {
		if a := e.allocations(nw); len(a) != 0 {
			t.Errorf("%s: addresses still allocated after DEL: %v", nw, a)
		}
	}
	if c := e.cacheFiles(); len(c) != 0 {
		t.Errorf("cache entries left: %v", c)
	}
	if err := e.del(p); err != nil {
		t.Errorf("second DEL: %v", err)
	}
}
