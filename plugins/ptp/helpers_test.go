package ptp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/attachtest"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/masq"
	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/knit-cni/knit/pkg/testutil"
	"github.com/knit-cni/knit/plugins/hostlocal"
	"github.com/knit-cni/knit/plugins/ptp"
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
	return &world{t: t, host: testutil.NewNS(t), data: t.TempDir(),
		reg: cni.Registry{"ptp": ptp.Plugin{}, "host-local": hostlocal.Plugin{}}}
}

// ipam is a host-local section over the subnets (one range set each) with
// default routes for their families.
func (w *world) ipam(subnets ...string) string {
	sets := make([]string, len(subnets))
	var routes []string
	for i, s := range subnets {
		sets[i] = `[{"subnet":"` + s + `"}]`
		if strings.Contains(s, ":") {
			routes = append(routes, `{"dst":"::/0"}`)
		} else {
			routes = append(routes, `{"dst":"0.0.0.0/0"}`)
		}
	}
	return fmt.Sprintf(`"ipam":{"type":"host-local","dataDir":%q,"ranges":[%s],"routes":[%s]}`,
		w.data, strings.Join(sets, ","), strings.Join(routes, ","))
}

func conf(v, body string) []byte {
	s := `{"cniVersion":"` + v + `","name":"testnet","type":"ptp"`
	if body != "" {
		s += "," + body
	}
	return []byte(s + "}")
}

// do runs the plugin in process on a thread inside the scratch host.
func (w *world) do(req *cni.Request) (types.Result, error) {
	var res types.Result
	err := w.host.Do(func() error {
		var err error
		res, err = testutil.Call(context.Background(), w.reg, "ptp", req)
		return err
	})
	return res, err
}

func (w *world) call(cmd cni.Command, c *testutil.NS, id string, config []byte) (types.Result, error) {
	req := &cni.Request{Command: cmd, ContainerID: id, IfName: "eth0", Config: config}
	if c != nil {
		req.Netns = c.Path()
	}
	return w.do(req)
}

func (w *world) add(c *testutil.NS, id string, config []byte) *current.Result {
	w.t.Helper()
	res, err := w.call(cni.CmdAdd, c, id, config)
	if err != nil {
		w.t.Fatalf("ADD %s: %v", id, err)
	}
	return attachtest.ResultOf(w.t, res)
}

func (w *world) del(c *testutil.NS, id string, config []byte) {
	w.t.Helper()
	if _, err := w.call(cni.CmdDel, c, id, config); err != nil {
		w.t.Fatalf("DEL %s: %v", id, err)
	}
}

// exec runs a plugin binary inside the scratch host with CNI_PATH dirs.
func (w *world) exec(bin string, req *cni.Request, dirs ...string) ([]byte, error) {
	w.t.Helper()
	r := *req
	r.Path = dirs
	return testutil.ExecIn(context.Background(), w.host, bin, &r)
}

func (w *world) held(ip string) bool {
	_, err := os.Stat(filepath.Join(w.data, "testnet", ip))
	return err == nil
}

func knitBin(t *testing.T) (string, string) {
	dir := testutil.PluginDir(t)
	return filepath.Join(dir, "ptp"), dir
}

func link(t *testing.T, ns *testutil.NS, name string) netlink.Link {
	t.Helper()
	return attachtest.Link(t, ns, name)
}

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

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// linkRoutes lists the main table's routes through a link other than
// link-local ones, as "dst via gw scope src".
func linkRoutes(t *testing.T, h *netlink.Handle, l netlink.Link) []string {
	t.Helper()
	rs, err := nlsafe.RouteListFiltered(h, netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN, LinkIndex: l.Attrs().Index},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_OIF)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		if r.Dst != nil && r.Dst.IP.IsLinkLocalUnicast() {
			continue
		}
		s := fmt.Sprintf("%v", r.Dst)
		if r.Gw != nil {
			s += " via " + r.Gw.String()
		}
		s += " scope " + r.Scope.String()
		if r.Src != nil {
			s += " src " + r.Src.String()
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// addrs lists a link's addresses other than link-local.
func addrs(t *testing.T, h *netlink.Handle, l netlink.Link) []string {
	t.Helper()
	as, err := nlsafe.AddrList(h, l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range as {
		if !a.IP.IsLinkLocalUnicast() {
			out = append(out, a.IPNet.String())
		}
	}
	sort.Strings(out)
	return out
}

// masqRules returns the owner comments of the masquerade rules in the host.
func masqRules(t *testing.T, w *world) []string {
	t.Helper()
	r, err := masq.Owned(w.host.Fd())
	if err != nil {
		t.Fatal(err)
	}
	return r
}
