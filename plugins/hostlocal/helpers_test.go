package hostlocal_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/testutil"
	"github.com/knit-cni/knit/plugins/hostlocal"
)

// netns is a placeholder: an IPAM plugin never opens the namespace, but
// skel insists CNI_NETNS is set on ADD and CHECK.
const netns = "/var/run/netns/unused-by-ipam"

var reg = cni.Registry{"host-local": hostlocal.Plugin{}}

// env is one network's test setup: a data dir and a config template.
type env struct {
	t       testing.TB
	dataDir string
	name    string
	version string
	ipam    string // the ipam object's members after type and dataDir
	top     string // extra top-level members, e.g. runtimeConfig
}

func newEnv(t testing.TB, ipam string) *env {
	return &env{t: t, dataDir: t.TempDir(), name: "net1", version: "1.0.0", ipam: ipam}
}

func (e *env) config() []byte {
	s := `{"cniVersion":"` + e.version + `","name":"` + e.name + `","type":"bridge",`
	if e.top != "" {
		s += e.top + ","
	}
	s += `"ipam":{"type":"host-local","dataDir":"` + e.dataDir + `"`
	if e.ipam != "" {
		s += "," + e.ipam
	}
	return []byte(s + "}}")
}

func (e *env) netDir() string { return filepath.Join(e.dataDir, e.name) }

func (e *env) req(cmd cni.Command, cid, ifname, args string) *cni.Request {
	return &cni.Request{Command: cmd, ContainerID: cid, Netns: netns, IfName: ifname, Args: args, Config: e.config()}
}

// add runs ADD in process and returns the result in the newest version.
func (e *env) add(cid, ifname, args string) (*current.Result, error) {
	res, err := testutil.Call(context.Background(), reg, "host-local", e.req(cni.CmdAdd, cid, ifname, args))
	if err != nil {
		return nil, err
	}
	return cni.AsCurrent(res)
}

func (e *env) mustAdd(cid string) *current.Result {
	e.t.Helper()
	res, err := e.add(cid, "eth0", "")
	if err != nil {
		e.t.Fatalf("ADD %s: %v", cid, err)
	}
	return res
}

func (e *env) call(cmd cni.Command, cid, ifname string) error {
	_, err := testutil.Call(context.Background(), reg, "host-local", e.req(cmd, cid, ifname, ""))
	return err
}

func (e *env) mustDel(cid, ifname string) {
	e.t.Helper()
	if err := e.call(cni.CmdDel, cid, ifname); err != nil {
		e.t.Fatalf("DEL %s/%s: %v", cid, ifname, err)
	}
}

// files returns the network directory's address files: name → content.
func (e *env) files() map[string]string {
	e.t.Helper()
	ents, err := os.ReadDir(e.netDir())
	if errors.Is(err, os.ErrNotExist) {
		return map[string]string{}
	}
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]string{}
	for _, d := range ents {
		n := d.Name()
		if d.IsDir() || n == "lock" || strings.HasPrefix(n, "last_reserved_ip.") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(e.netDir(), n))
		if err != nil {
			e.t.Fatal(err)
		}
		out[n] = string(b)
	}
	return out
}

func (e *env) wantFiles(want map[string]string) {
	e.t.Helper()
	if got := e.files(); !reflect.DeepEqual(got, want) {
		e.t.Fatalf("address files = %q, want %q", got, want)
	}
}

func ips(res *current.Result) []string {
	var out []string
	for _, ip := range res.IPs {
		out = append(out, ip.Address.String()+" gw "+ip.Gateway.String())
	}
	return out
}

func firstIP(res *current.Result) string { return res.IPs[0].Address.IP.String() }

// code returns the CNI error code of err (0 for nil).
func code(err error) uint {
	if err == nil {
		return 0
	}
	return cni.AsTypesError(err).Code
}

func wantCode(t testing.TB, err error, c uint, substr string) {
	t.Helper()
	if code(err) != c {
		t.Fatalf("error %v: code %d, want %d", err, code(err), c)
	}
	if !strings.Contains(err.Error(), substr) {
		t.Fatalf("error %q does not mention %q", err, substr)
	}
}

// refBin is the reference plugin, skipping the test when absent.
func refBin(t testing.TB) string { return testutil.RequireRef(t, "host-local") }

func knitBin(t testing.TB) string { return filepath.Join(testutil.PluginDir(t), "host-local") }

// execRes runs bin with the CNI protocol and decodes an ADD result.
func (e *env) exec(bin string, cmd cni.Command, cid, ifname, args string) ([]byte, error) {
	return testutil.Exec(context.Background(), bin, e.req(cmd, cid, ifname, args))
}

func (e *env) execAdd(bin, cid string) *current.Result {
	e.t.Helper()
	out, err := e.exec(bin, cni.CmdAdd, cid, "eth0", "")
	if err != nil {
		e.t.Fatalf("%s ADD %s: %v", bin, cid, err)
	}
	return testutil.DecodeResult(e.t, e.config(), out)
}

// normalize decodes a printed result into generic JSON, dropping an empty
// dns object (library versions differ on whether they print one).
func normalize(t testing.TB, out []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("result %s: %v", out, err)
	}
	if d, ok := m["dns"].(map[string]any); ok && len(d) == 0 {
		delete(m, "dns")
	}
	return m
}

// flockFile takes the lock the way the reference does, from outside knit.
func flockFile(f *os.File) error { return unix.Flock(int(f.Fd()), unix.LOCK_EX) }
