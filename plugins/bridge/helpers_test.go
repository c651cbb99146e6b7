package bridge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/attachtest"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/testutil"
	"github.com/knit-cni/knit/plugins/bridge"
	"github.com/knit-cni/knit/plugins/hostlocal"
	"github.com/knit-cni/knit/plugins/static"
)

// world is a scratch "host" namespace the plugin runs in, with an IPAM
// data directory of its own: nothing a test does reaches the real host.
type world struct {
	t    *testing.T
	host *testutil.NS
	data string
	reg  cni.Registry
}

func newWorld(t *testing.T) *world {
	t.Helper()
	testutil.RequireRoot(t)
	return &world{t: t, host: testutil.NewNS(t), data: t.TempDir(), reg: cni.Registry{
		"bridge": bridge.Plugin{}, "host-local": hostlocal.Plugin{}, "static": static.Plugin{},
	}}
}

// ipam is a host-local section over the subnets, one range set each.
func (w *world) ipam(subnets ...string) string {
	sets := make([]string, len(subnets))
	for i, s := range subnets {
		sets[i] = `[{"subnet":"` + s + `"}]`
	}
	return fmt.Sprintf(`"ipam":{"type":"host-local","dataDir":%q,"ranges":[%s]}`, w.data, strings.Join(sets, ","))
}

// conf is a bridge config: {"cniVersion":v,"name":"testnet","type":"bridge", body}.
func conf(v, body string) []byte {
	s := `{"cniVersion":"` + v + `","name":"testnet","type":"bridge"`
	if body != "" {
		s += "," + body
	}
	return []byte(s + "}")
}

// call runs the plugin in process with the scratch namespace as the host.
func (w *world) call(cmd cni.Command, c *testutil.NS, id, ifName string, config []byte, args string) (types.Result, error) {
	w.t.Helper()
	req := &cni.Request{Command: cmd, ContainerID: id, IfName: ifName, Config: config, Args: args}
	if c != nil {
		req.Netns = c.Path()
	}
	return w.do("bridge", req)
}

// do runs a registered plugin in process on a thread inside the scratch
// host namespace, as knitd would run it in the real host's.
func (w *world) do(plugin string, req *cni.Request) (types.Result, error) {
	var res types.Result
	err := w.host.Do(func() error {
		var err error
		res, err = testutil.Call(context.Background(), w.reg, plugin, req)
		return err
	})
	return res, err
}

// add runs ADD in process and returns the result in the newest version.
func (w *world) add(c *testutil.NS, id string, config []byte) *current.Result {
	w.t.Helper()
	res, err := w.call(cni.CmdAdd, c, id, "eth0", config, "")
	if err != nil {
		w.t.Fatalf("ADD %s: %v", id, err)
	}
	return attachtest.ResultOf(w.t, res)
}

func (w *world) del(c *testutil.NS, id string, config []byte) {
	w.t.Helper()
	if _, err := w.call(cni.CmdDel, c, id, "eth0", config, ""); err != nil {
		w.t.Fatalf("DEL %s: %v", id, err)
	}
}

// exec runs a plugin binary (knit's or the reference's) inside the scratch
// host namespace, with CNI_PATH pointing at dirs.
func (w *world) exec(bin string, req *cni.Request, dirs ...string) ([]byte, error) {
	w.t.Helper()
	r := *req
	r.Path = dirs
	return testutil.ExecIn(context.Background(), w.host, bin, &r)
}

// knitBin is knit's bridge binary; CNI_PATH for it is its own directory.
func knitBin(t *testing.T, name string) (string, string) {
	dir := testutil.PluginDir(t)
	return filepath.Join(dir, name), dir
}

// link returns a link of ns by name.
func link(t *testing.T, ns *testutil.NS, name string) netlink.Link {
	t.Helper()
	return attachtest.Link(t, ns, name)
}

// ipOf returns the address of the result's first IP of the family.
func ipOf(t *testing.T, res *current.Result, v4 bool) net.IP {
	t.Helper()
	for _, ipc := range res.IPs {
		if (ipc.Address.IP.To4() != nil) == v4 {
			return ipc.Address.IP
		}
	}
	t.Fatalf("no IPv4=%v address in %+v", v4, res.IPs)
	return nil
}

// mustJSON marshals v.
func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// held reports whether host-local holds ip for the test network.
func (w *world) held(ip string) bool {
	_, err := os.Stat(filepath.Join(w.data, "testnet", ip))
	return err == nil
}

// hostLinks lists the scratch host's links other than lo.
func (w *world) hostLinks() []string {
	return attachtest.Links(w.t, w.host)
}
