package portmap_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/knit-cni/knit/pkg/testnet"
	"github.com/knit-cni/knit/pkg/testutil"
)

// TestChainBridgeHostLocalPortmapFirewall runs knit's bridge (with
// host-local), portmap and firewall as a runtime runs a conflist, through
// the real binary inside the host test namespace: ADD in order with each
// result as the next plugin's prevResult, traffic through the mapped port,
// CHECK, DEL in reverse order, and nothing left behind.
func TestChainBridgeHostLocalPortmapFirewall(t *testing.T) {
	testutil.RequireRoot(t)
	dir := testutil.PluginDir(t)
	tp := testnet.New(t)
	cont := testnet.NewNS(t)
	testnet.Serve(t, cont, 80)
	dataDir := t.TempDir()
	const version = "1.0.0"
	plugins := []map[string]any{
		{"type": "bridge", "bridge": "cni-e2e", "isGateway": true, "hairpinMode": true,
			"ipam": map[string]any{"type": "host-local", "dataDir": dataDir,
				"ranges": [][]map[string]any{{{"subnet": "10.77.0.0/24"}}}, "routes": []map[string]any{{"dst": "0.0.0.0/0"}}}},
		{"type": "portmap", "runtimeConfig": map[string]any{"portMappings": []pm{tcp(8080, 80)}}},
		{"type": "firewall", "ingressPolicy": "same-bridge"},
	}
	run := func(i int, cmd cni.Command, prev json.RawMessage) json.RawMessage {
		t.Helper()
		conf := map[string]any{"cniVersion": version, "name": "e2e"}
		for k, v := range plugins[i] {
			conf[k] = v
		}
		if prev != nil {
			conf["prevResult"] = prev
		}
		b, _ := json.Marshal(conf)
		typ := plugins[i]["type"].(string)
		bin := testutil.InHost(t, tp.Host.Path(), dir+"/"+typ)
		r := &cni.Request{Command: cmd, ContainerID: "e2e1", Netns: cont.Path(), IfName: "eth0",
			Path: []string{dir}, Config: b}
		out, err := testutil.Exec(context.Background(), bin, r)
		if err != nil {
			t.Fatalf("%s %s: %v", typ, cmd, err)
		}
		return out
	}
	var prev json.RawMessage
	for i := range plugins {
		prev = run(i, cni.CmdAdd, prev)
	}
	res := testutil.DecodeResult(t, []byte(`{"cniVersion":"`+version+`"}`), prev)
	if len(res.IPs) != 1 || res.IPs[0].Address.IP.To4() == nil {
		t.Fatalf("chain result: %s", prev)
	}
	got, err := testnet.DialTCP(tp.Ext, testnet.HostPort(testnet.HostExtIP4, 8080))
	wantPeer(t, "external client through the chain's host port", got, err, testnet.ExtIP4)
	got, err = testnet.DialTCP(cont, testnet.HostPort(testnet.HostExtIP4, 8080))
	wantPeer(t, "hairpin through the chain's host port", got, err, res.IPs[0].Gateway)
	for i := range plugins {
		run(i, cni.CmdCheck, prev)
	}
	for i := len(plugins) - 1; i >= 0; i-- {
		run(i, cni.CmdDel, prev)
	}
	if _, err := testnet.DialTCP(tp.Ext, testnet.HostPort(testnet.HostExtIP4, 8080)); err == nil {
		t.Fatal("host port still mapped after DEL")
	}
	out, _ := testnetRun(tp, "nft", "list", "ruleset")
	if strings.Contains(out, "e2e/e2e1") {
		t.Fatalf("rules left after DEL:\n%s", out)
	}
	if l, err := nlsafe.LinkList(tp.Host.H); err == nil {
		for _, link := range l {
			if strings.HasPrefix(link.Attrs().Name, "veth") {
				t.Errorf("host veth %s left after DEL", link.Attrs().Name)
			}
		}
	}
	entries, _ := os.ReadDir(dataDir + "/e2e")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "10.77.") {
			t.Errorf("host-local allocation %s left after DEL", e.Name())
		}
	}
}

func testnetRun(tp *testnet.Topo, name string, args ...string) (string, error) {
	out, err := exec.Command("nsenter", append([]string{"--net=" + tp.Host.Path(), name}, args...)...).CombinedOutput()
	return string(out), err
}
