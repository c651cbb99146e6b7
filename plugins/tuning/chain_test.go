package tuning_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/knit-cni/knit/pkg/chaintest"
	"github.com/knit-cni/knit/pkg/testutil"
)

// TestChainAfterKnitBridge runs bridge (host-local) then tuning through
// libcni, as a runtime would, and checks the container, CHECK, and that
// DEL leaves nothing.
func TestChainAfterKnitBridge(t *testing.T) {
	testutil.RequireRoot(t)
	host, cont := testutil.NewNS(t), testutil.NewNS(t)
	state, ipam := t.TempDir(), t.TempDir()
	list := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"tchain","plugins":[
		{"type":"bridge","bridge":"kbr0","isGateway":true,
		 "ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.66.0.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}},
		{"type":"tuning","dataDir":%q,"mac":"02:12:34:56:78:9a","mtu":1400,"sysctl":{"net.ipv4.conf.IFNAME.arp_ignore":"1"}}]}`, ipam, state)
	ch := chaintest.NewChain(t, host, testutil.PluginDir(t), []byte(list))
	rt := &libcni.RuntimeConf{ContainerID: "chain1", NetNS: cont.Path(), IfName: "eth0"}
	res, err := ch.Add(rt)
	if err != nil {
		t.Fatalf("ADD chain: %v", err)
	}
	got := stateOf(t, cont, "eth0")
	if got.MAC != "02:12:34:56:78:9a" || got.MTU != 1400 {
		t.Fatalf("container eth0 %+v", got)
	}
	if v := getSysctl(t, cont, "net/ipv4/conf/eth0/arp_ignore"); v != "1" {
		t.Fatalf("arp_ignore %s", v)
	}
	var found bool
	for _, i := range res.Interfaces {
		found = found || (i.Name == "eth0" && i.Sandbox != "" && i.Mac == "02:12:34:56:78:9a")
	}
	if !found {
		t.Fatalf("result does not report the new MAC: %+v", res.Interfaces)
	}
	if err := testutil.Ping(cont, "10.66.0.1", ""); err != nil {
		t.Fatalf("ping the bridge gateway with the tuned MAC: %v", err)
	}
	if err := ch.Check(rt); err != nil {
		t.Fatalf("CHECK chain: %v", err)
	}
	if err := ch.Del(rt); err != nil {
		t.Fatalf("DEL chain: %v", err)
	}
	assertEmptyDir(t, state)
	if _, err := cont.H.LinkByName("eth0"); err == nil {
		t.Fatal("container eth0 survived DEL")
	}
	ents, _ := os.ReadDir(ipam + "/tchain")
	for _, e := range ents {
		if e.Name() == "10.66.0.2" {
			t.Fatal("host-local allocation survived DEL")
		}
	}
}
