package sbr_test

import (
	"fmt"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/chaintest"
	"github.com/knit-cni/knit/pkg/testutil"
)

// TestChainAfterKnitBridge: a pod's first interface (eth0, with the
// default route) comes from a hand-made veth; net1 from knit's bridge and
// host-local, chained with sbr through libcni. Traffic from net1's address
// then routes through net1.
func TestChainAfterKnitBridge(t *testing.T) {
	testutil.RequireRoot(t)
	main := chaintest.NewVeth(t, chaintest.VethOpts{HostIf: "hv1", ContIf: "eth0", HostAddr: "10.1.0.1/24", ContAddr: "10.1.0.2/24"})
	cont := main.Cont
	list := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"sbrchain","plugins":[
		{"type":"bridge","bridge":"kbr1","isGateway":true,
		 "ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.68.0.0/24"}]]}},
		{"type":"sbr"}]}`, t.TempDir())
	ch := chaintest.NewChain(t, main.Host, testutil.PluginDir(t), []byte(list))
	rt := &libcni.RuntimeConf{ContainerID: "chain1", NetNS: cont.Path(), IfName: "net1"}
	res, err := ch.Add(rt)
	if err != nil {
		t.Fatalf("ADD chain: %v", err)
	}
	ip := res.IPs[0].Address.IP.String()
	if got := fmt.Sprint(rules(t, cont)); got != "[from "+ip+"/32 table 100]" {
		t.Fatalf("rules %s", got)
	}
	if got := fmt.Sprint(routes(t, cont, 100)); got != "[10.68.0.0/24 via <nil> dev net1 default via 10.68.0.1 dev net1]" {
		t.Fatalf("table 100: %s", got)
	}
	if o := outIf(t, cont, "192.0.2.1", ip); o != "net1" {
		t.Fatalf("from net1's address traffic leaves via %s", o)
	}
	if o := outIf(t, cont, "192.0.2.1", "10.1.0.2"); o != "eth0" {
		t.Fatalf("from eth0's address traffic leaves via %s", o)
	}
	if err := testutil.Ping(cont, "10.68.0.1", ip); err != nil {
		t.Fatalf("ping the bridge gateway from net1's address: %v", err)
	}
	if err := ch.Check(rt); err != nil {
		t.Fatalf("CHECK chain: %v", err)
	}
	if err := ch.Del(rt); err != nil {
		t.Fatalf("DEL chain: %v", err)
	}
	if got := rules(t, cont); len(got) != 0 {
		t.Fatalf("rules after DEL %v", got)
	}
	if got := routes(t, cont, unix.RT_TABLE_MAIN); fmt.Sprint(got) != "[10.1.0.0/24 via <nil> dev eth0 default via 10.1.0.1 dev eth0]" {
		t.Fatalf("main table after DEL: %v", got)
	}
}
