package bridge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	return testutil.Exec(context.Background(), attachtest.InHost(w.t, w.host.Path(), bin), &r)
}

// knitBin is knit's bridge binary; CNI_PATH for it is its own directory.
func knitBin(t *testing.T, name string) (string, string) {
	dir := testutil.PluginDir(t)
	return filepath.Join(dir, name), dir
}

// run runs a command inside a namespace and returns its combined output.
func run(ns *testutil.NS, name string, args ...string) (string, error) {
	a := append([]string{"--net=" + ns.Path(), name}, args...)
	out, err := exec.Command("nsenter", a...).CombinedOutput()
	return string(out), err
}

// ping sends one ICMP echo from ns to ip, retrying for a moment: a fresh
// bridge port may still be learning.
func ping(t *testing.T, ns *testutil.NS, ip string) {
	t.Helper()
	var out string
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if out, err = run(ns, "ping", "-c1", "-W1", ip); err == nil {
			return
		}
	}
	t.Fatalf("ping %s from %s: %v\n%s", ip, ns.Path(), err, out)
}

// noPing fails if ns can reach ip.
func noPing(t *testing.T, ns *testutil.NS, ip string) {
	t.Helper()
	if out, err := run(ns, "ping", "-c1", "-W1", ip); err == nil {
		t.Fatalf("ping %s from %s succeeded, want failure\n%s", ip, ns.Path(), out)
	}
}

// link returns a link of ns by name.
func link(t *testing.T, ns *testutil.NS, name string) netlink.Link {
	t.Helper()
	return attachtest.Link(t, ns, name)
}

// sysctl reads a sysctl inside ns.
func sysctl(t *testing.T, ns *testutil.NS, key string) string {
	t.Helper()
	var v []byte
	err := ns.Do(func() error {
		var err error
		v, err = os.ReadFile(filepath.Join("/proc/sys", key))
		return err
	})
	if err != nil {
		t.Fatalf("sysctl %s: %v", key, err)
	}
	return strings.TrimSpace(string(v))
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

// serveOnce listens on addr inside ns and reports the remote address of
// the first connection.
func serveOnce(t *testing.T, ns *testutil.NS, addr string) <-chan string {
	t.Helper()
	var l net.Listener
	if err := ns.Do(func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { l.Close() })
	got := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- "accept: " + err.Error()
			return
		}
		defer c.Close()
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		_, _ = c.Write([]byte("hello"))
		got <- host
	}()
	return got
}

// dialFrom connects from inside ns to addr and reads the server's greeting.
func dialFrom(t *testing.T, ns *testutil.NS, addr string) {
	t.Helper()
	var c net.Conn
	err := ns.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, 3*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, ns.Path(), err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 5)
	if _, err := c.Read(buf); err != nil || string(buf) != "hello" {
		t.Fatalf("reading from %s: %q %v", addr, buf, err)
	}
}

// remoteSeen waits for serveOnce's report.
func remoteSeen(t *testing.T, got <-chan string) string {
	t.Helper()
	select {
	case s := <-got:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("server saw no connection")
		return ""
	}
}
