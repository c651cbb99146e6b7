package dhcp_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/knit-cni/knit/pkg/chaintest"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/testutil"
)

// TestChainWithKnitMainPlugins runs knit's bridge and macvlan with dhcp
// as their IPAM through libcni: the main plugin configures the leased
// address, the container reaches the server with it, DEL releases it.
func TestChainWithKnitMainPlugins(t *testing.T) {
	testutil.RequireRoot(t)
	cases := []struct {
		name, main string
		segment    func(*testing.T) *segment
	}{
		{"bridge", `"type":"bridge","bridge":"br0"`, newBridgeSegment},
		{"macvlan", `"type":"macvlan","master":"uplink","mode":"bridge"`, newMacvlanSegment},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			seg := c.segment(t)
			srv := seg.startDnsmasq(t)
			sock := startDaemon(t)
			cont := testutil.NewNS(t)
			list := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"dnet","plugins":[{%s,
				"ipam":{"type":"dhcp","daemonSocketPath":%q,"timeout":"5s"}}]}`, c.main, sock)
			ch := chaintest.NewChain(t, seg.sw, testutil.PluginDir(t), []byte(list))
			rt := &libcni.RuntimeConf{ContainerID: "chain-" + c.name, NetNS: cont.Path(), IfName: "eth0"}
			res, err := ch.Add(rt)
			if err != nil {
				t.Fatalf("ADD chain: %v", err)
			}
			ip := assertLease(t, res)
			if _, ok := srv.leaseFor(t, ip); !ok {
				t.Fatalf("dnsmasq has no lease for %s", ip)
			}
			if err := testutil.Ping(cont, serverIP, ""); err != nil {
				t.Fatalf("ping the server from the configured lease: %v", err)
			}
			if err := ch.Check(rt); err != nil {
				t.Fatalf("CHECK chain: %v", err)
			}
			if err := ch.Del(rt); err != nil {
				t.Fatalf("DEL chain: %v", err)
			}
			// The daemon let go of the lease whatever the server heard.
			ipamConf := conf("1.1.0", sock, "")
			_, err = execPlugin(t, cni.CmdCheck, &cni.Request{ContainerID: rt.ContainerID, Netns: cont.Path(), IfName: "eth0", Config: ipamConf})
			if err == nil || !strings.Contains(err.Error(), "no lease") {
				t.Fatalf("CHECK after DEL: %v, want no lease", err)
			}
			// The main plugin's DEL calls IPAM DEL while the link still
			// exists (pkg/vethnet, pkg/ifattach), so the daemon's
			// DHCPRELEASE reaches the server, as with the reference plugins.
			poll(t, 5*time.Second, "the release", func() bool { _, ok := srv.leaseFor(t, ip); return !ok })
			if _, err := cont.H.LinkByName("eth0"); err == nil {
				t.Fatal("container eth0 survived DEL")
			}
		})
	}
}
