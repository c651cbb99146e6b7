package bandwidth_test

import (
	"fmt"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/knit-cni/knit/pkg/chaintest"
	"github.com/knit-cni/knit/pkg/testutil"
)

// TestChainAfterKnitBridge runs bridge (host-local) then bandwidth through
// libcni with the limits passed as the bandwidth capability, as Kubernetes
// does from pod annotations.
func TestChainAfterKnitBridge(t *testing.T) {
	testutil.RequireRoot(t)
	host, cont := testutil.NewNS(t), testutil.NewNS(t)
	list := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"bwchain","plugins":[
		{"type":"bridge","bridge":"kbr0","isGateway":true,
		 "ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.67.0.0/24"}]]}},
		{"type":"bandwidth","capabilities":{"bandwidth":true}}]}`, t.TempDir())
	ch := chaintest.NewChain(t, host, testutil.PluginDir(t), []byte(list))
	rt := &libcni.RuntimeConf{ContainerID: "chain1", NetNS: cont.Path(), IfName: "eth0",
		CapabilityArgs: map[string]any{"bandwidth": map[string]any{
			"ingressRate": 10_000_000, "ingressBurst": 100_000, "egressRate": 20_000_000, "egressBurst": 200_000}}}
	res, err := ch.Add(rt)
	if err != nil {
		t.Fatalf("ADD chain: %v", err)
	}
	var hostVeth, ifb string
	for _, i := range res.Interfaces {
		switch {
		case i.Sandbox == "" && len(i.Name) > 3 && i.Name[:3] == "bwp":
			ifb = i.Name
		case i.Sandbox == "" && i.Name != "kbr0":
			hostVeth = i.Name
		}
	}
	if hostVeth == "" || ifb == "" {
		t.Fatalf("result interfaces %+v lack the host veth or the ifb", res.Interfaces)
	}
	if r := tbfOf(t, host, hostVeth).Rate; r != 1_250_000 {
		t.Fatalf("ingress TBF rate %d", r)
	}
	if r := tbfOf(t, host, ifb).Rate; r != 2_500_000 {
		t.Fatalf("egress TBF rate %d", r)
	}
	if err := testutil.Ping(cont, "10.67.0.1", ""); err != nil {
		t.Fatalf("traffic through the shaped veth: %v", err)
	}
	if err := ch.Check(rt); err != nil {
		t.Fatalf("CHECK chain: %v", err)
	}
	if err := ch.Del(rt); err != nil {
		t.Fatalf("DEL chain: %v", err)
	}
	if n := len(ifbs(t, host)); n != 0 {
		t.Fatalf("%d ifbs left after DEL", n)
	}
	if _, err := host.H.LinkByName(hostVeth); err == nil {
		t.Fatal("host veth survived DEL")
	}
}
