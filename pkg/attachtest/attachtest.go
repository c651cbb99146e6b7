// Package attachtest holds test helpers for the plugins that put a link
// into a container (macvlan, ipvlan, vlan, host-device, dummy, tap, vrf):
// an in-process IPAM plugin that counts calls and fails on demand, configs
// in every spec version, and link assertions. Running a plugin inside a
// scratch "host" namespace is testutil.InHost / testutil.ExecIn.
package attachtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/knit-cni/knit/pkg/testutil"
)

// Conf returns a plugin config: {"cniVersion":version,"name":"test", body}
// where body is the rest of a JSON object ("" for none), with prev as
// prevResult in that version when non-nil.
func Conf(t testing.TB, ver, body string, prev types.Result) []byte {
	t.Helper()
	s := `{"cniVersion":"` + ver + `","name":"testnet"`
	if body != "" {
		s += "," + body
	}
	s += "}"
	if prev == nil {
		return []byte(s)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("config %s: %v", s, err)
	}
	conv, err := prev.GetAsVersion(ver)
	if err != nil {
		t.Fatalf("prevResult as %s: %v", ver, err)
	}
	raw, err := json.Marshal(conv)
	if err != nil {
		t.Fatal(err)
	}
	m["prevResult"] = json.RawMessage(raw)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// WithPrev returns config with prevResult set to res (converted to the
// config's version): what a runtime sends for CHECK and DEL.
func WithPrev(t testing.TB, config []byte, res types.Result) []byte {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(config, &m); err != nil {
		t.Fatal(err)
	}
	var v string
	_ = json.Unmarshal(m["cniVersion"], &v)
	conv, err := res.GetAsVersion(v)
	if err != nil {
		t.Fatalf("result as %s: %v", v, err)
	}
	raw, err := json.Marshal(conv)
	if err != nil {
		t.Fatal(err)
	}
	m["prevResult"] = raw
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ResultOf converts an in-process ADD result to the newest version.
func ResultOf(t testing.TB, res types.Result) *current.Result {
	t.Helper()
	cur, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatalf("result: %v", err)
	}
	return cur
}

// Printed returns the JSON a runtime would get for res in version ver.
func Printed(t testing.TB, res types.Result, ver string) map[string]any {
	t.Helper()
	conv, err := res.GetAsVersion(ver)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(conv)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// Code returns err's CNI error code (0 when err is not a CNI error).
func Code(err error) uint {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code
	}
	var ke *cni.Error
	if errors.As(err, &ke) {
		return ke.Code
	}
	return 0
}

// WantCode fails unless err carries code and its message contains each of
// words.
func WantCode(t testing.TB, err error, code uint, words ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want code %d", code)
	}
	if c := Code(err); c != code {
		t.Fatalf("error %q has code %d, want %d", err, c, code)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("error %q does not mention %q", err, w)
		}
	}
}

// Links returns the names of the links in ns other than lo.
func Links(t testing.TB, ns *testutil.NS) []string {
	t.Helper()
	ls, err := nlsafe.LinkList(ns.H)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range ls {
		if l.Attrs().Name != "lo" {
			names = append(names, l.Attrs().Name)
		}
	}
	return names
}

// NoLink fails if ns has a link named name.
func NoLink(t testing.TB, ns *testutil.NS, name string) {
	t.Helper()
	if _, err := ns.H.LinkByName(name); err == nil {
		t.Fatalf("link %s still exists in %s", name, ns.Path())
	}
}

// Link returns the link named name in ns.
func Link(t testing.TB, ns *testutil.NS, name string) netlink.Link {
	t.Helper()
	l, err := ns.H.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s in %s: %v", name, ns.Path(), err)
	}
	return l
}

// HasAddr fails unless link name in ns carries cidr.
func HasAddr(t testing.TB, ns *testutil.NS, name, cidr string) {
	t.Helper()
	l := Link(t, ns, name)
	addrs, err := nlsafe.AddrList(ns.H, l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if a.IPNet.String() == cidr {
			return
		}
	}
	t.Fatalf("%s has %v, want %s", name, addrs, cidr)
}

// AddAddr puts cidr on link name in ns and sets it up.
func AddAddr(t testing.TB, ns *testutil.NS, name, cidr string) {
	t.Helper()
	l := Link(t, ns, name)
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.H.AddrAdd(l, a); err != nil {
		t.Fatalf("adding %s to %s: %v", cidr, name, err)
	}
	if err := ns.H.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
}

// FakeIPAM is an in-process IPAM plugin: ADD returns a copy of Result (or
// AddErr); every call is counted. Register it in a test's registry under
// the type the config's ipam section names.
type FakeIPAM struct {
	Result *current.Result
	AddErr error
	// OnDel, when set, runs in DEL, whose error it becomes: a test's look
	// at the kernel at the moment IPAM DEL runs.
	OnDel func(req *cni.Request) error

	mu                      sync.Mutex
	adds, dels, checks, gcs int
}

// Counts returns how many ADD, DEL, CHECK and GC calls it served.
func (f *FakeIPAM) Counts() (adds, dels, checks, gcs int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.adds, f.dels, f.checks, f.gcs
}

// Add returns the configured result.
func (f *FakeIPAM) Add(ctx context.Context, req *cni.Request) (types.Result, error) {
	f.mu.Lock()
	f.adds++
	f.mu.Unlock()
	if f.AddErr != nil {
		return nil, f.AddErr
	}
	raw, err := json.Marshal(f.Result)
	if err != nil {
		return nil, err
	}
	return version.NewResult(current.ImplementedSpecVersion, raw)
}

// Del counts, then runs OnDel.
func (f *FakeIPAM) Del(ctx context.Context, req *cni.Request) error {
	f.mu.Lock()
	f.dels++
	f.mu.Unlock()
	if f.OnDel != nil {
		return f.OnDel(req)
	}
	return nil
}

// Check counts.
func (f *FakeIPAM) Check(ctx context.Context, req *cni.Request) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checks++
	return nil
}

// GC counts.
func (f *FakeIPAM) GC(ctx context.Context, req *cni.Request, valid []cni.Attachment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gcs++
	return nil
}

// IPResult is an IPAM result with one address (and its gateway) and the
// given routes ("dst" or "dst,gw").
func IPResult(t testing.TB, cidr, gw string, routes ...string) *current.Result {
	t.Helper()
	ip, n, err := net.ParseCIDR(cidr)
	if err != nil {
		t.Fatal(err)
	}
	n.IP = ip
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion,
		IPs: []*current.IPConfig{{Address: *n, Gateway: net.ParseIP(gw)}}}
	for _, r := range routes {
		parts := strings.Split(r, ",")
		_, dst, err := net.ParseCIDR(parts[0])
		if err != nil {
			t.Fatal(err)
		}
		rt := &types.Route{Dst: *dst}
		if len(parts) > 1 {
			rt.GW = net.ParseIP(parts[1])
		}
		res.Routes = append(res.Routes, rt)
	}
	return res
}

// Static returns a static IPAM section with one address.
func Static(cidr, gw string) string {
	s := `"ipam":{"type":"static","addresses":[{"address":"` + cidr + `"`
	if gw != "" {
		s += `,"gateway":"` + gw + `"`
	}
	return s + `}]}`
}

// Snapshot describes what a plugin left in ns for link ifName, in a form
// two implementations can be compared on: link kind and type-specific
// settings, MTU, up, addresses, the routes through it (every table) and
// the arp/ndisc notify sysctls. Random parts (MAC, ifindex) are left out.
func Snapshot(t testing.TB, ns *testutil.NS, ifName string) []string {
	t.Helper()
	l := Link(t, ns, ifName)
	a := l.Attrs()
	out := []string{fmt.Sprintf("link %s type=%s%s mtu=%d up=%v", a.Name, l.Type(), kindDetail(l), a.MTU, a.Flags&net.FlagUp != 0)}
	addrs, err := nlsafe.AddrList(ns.H, l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, ad := range addrs {
		if ad.IP.IsLinkLocalUnicast() {
			continue
		}
		lines = append(lines, "addr "+ad.IPNet.String())
	}
	routes, err := nlsafe.RouteListFiltered(ns.H, netlink.FAMILY_ALL, &netlink.Route{LinkIndex: a.Index, Table: 0},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst != nil && r.Dst.IP.IsLinkLocalUnicast() || r.Dst != nil && r.Dst.IP.IsLinkLocalMulticast() ||
			r.Dst != nil && r.Dst.IP.To4() == nil && r.Dst.IP.IsMulticast() {
			continue
		}
		lines = append(lines, fmt.Sprintf("route table=%d dst=%v gw=%v scope=%d type=%d", r.Table, r.Dst, r.Gw, r.Scope, r.Type))
	}
	err = ns.Do(func() error {
		for _, k := range []string{"ipv4/conf/" + ifName + "/arp_notify", "ipv6/conf/" + ifName + "/ndisc_notify"} {
			b, err := os.ReadFile("/proc/sys/net/" + k)
			if err == nil {
				lines = append(lines, "sysctl "+k+"="+strings.TrimSpace(string(b)))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return append(out, lines...)
}

func kindDetail(l netlink.Link) string {
	switch v := l.(type) {
	case *netlink.Macvlan:
		return fmt.Sprintf(" mode=%d", v.Mode)
	case *netlink.IPVlan:
		return fmt.Sprintf(" mode=%d flag=%d", v.Mode, v.Flag)
	case *netlink.Vlan:
		return fmt.Sprintf(" id=%d", v.VlanId)
	case *netlink.Vrf:
		return fmt.Sprintf(" table=%d", v.Table)
	}
	return ""
}

// NormalizedResult is a printed result as a generic map with what differs
// between two correct runs blanked: interface MACs, and sandbox paths
// (replaced by the position of the sandbox in sandboxes).
func NormalizedResult(t testing.TB, out []byte, sandboxes ...string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("result %s: %v", out, err)
	}
	// Older spec libraries print an empty "dns":{}; newer ones omit it.
	if d, ok := m["dns"].(map[string]any); ok && len(d) == 0 {
		delete(m, "dns")
	}
	ifs, _ := m["interfaces"].([]any)
	for _, i := range ifs {
		intf, _ := i.(map[string]any)
		if _, ok := intf["mac"]; ok {
			intf["mac"] = "MAC"
		}
		for n, s := range sandboxes {
			if intf["sandbox"] == s {
				intf["sandbox"] = fmt.Sprintf("SANDBOX%d", n)
			}
		}
	}
	return m
}

// HostLocal returns a host-local IPAM section allocating from subnet
// (with gw as the gateway when non-empty) and keeping its state under dir,
// never the host's /var/lib/cni.
func HostLocal(dir, subnet, gw string) string {
	r := `{"subnet":"` + subnet + `"`
	if gw != "" {
		r += `,"gateway":"` + gw + `"`
	}
	return `"ipam":{"type":"host-local","dataDir":"` + dir + `","ranges":[[` + r + `}]]}`
}

// Allocations lists the addresses host-local holds under dir: the files
// named like an IP in its per-network directories.
func Allocations(t testing.TB, dir string) []string {
	t.Helper()
	nets, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var ips []string
	for _, n := range nets {
		if !n.IsDir() {
			continue
		}
		files, err := os.ReadDir(filepath.Join(dir, n.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if net.ParseIP(f.Name()) != nil {
				ips = append(ips, f.Name())
			}
		}
	}
	return ips
}

// SideBySide runs ADD then DEL of conf for interface ifName with the
// reference binary ref (delegates from testutil.RefDir) and with knit's
// binary knit (delegates beside it), each into a fresh container
// namespace, and fails unless both print the same result (see
// NormalizedResult) and leave the same Snapshot, passed through keep when
// not nil, and unless DEL removes the link.
func SideBySide(t *testing.T, ref, knit string, conf []byte, ifName string, keep func([]string) []string) error {
	t.Helper()
	var results []map[string]any
	var states [][]string
	for _, bin := range []string{ref, knit} {
		cont := testutil.NewNS(t)
		req := &cni.Request{Command: cni.CmdAdd, ContainerID: "c1", Netns: cont.Path(), IfName: ifName, Config: conf}
		if bin == ref {
			req.Path = []string{testutil.RefDir}
		}
		out, err := testutil.Exec(context.Background(), bin, req)
		if err != nil {
			t.Fatalf("%s ADD: %v", bin, err)
		}
		results = append(results, NormalizedResult(t, out, cont.Path()))
		state := Snapshot(t, cont, ifName)
		if keep != nil {
			state = keep(state)
		}
		states = append(states, state)
		req.Command = cni.CmdDel
		if _, err := testutil.Exec(context.Background(), bin, req); err != nil {
			t.Fatalf("%s DEL: %v", bin, err)
		}
		NoLink(t, cont, ifName)
	}
	var errs []error
	if !reflect.DeepEqual(results[0], results[1]) {
		errs = append(errs, fmt.Errorf("results differ:\nref  %v\nknit %v", results[0], results[1]))
	}
	if !reflect.DeepEqual(states[0], states[1]) {
		errs = append(errs, fmt.Errorf("kernel state differs:\nref  %q\nknit %q", states[0], states[1]))
	}
	return errors.Join(errs...)
}

// WithoutNdiscNotify drops the ndisc_notify sysctl from a Snapshot:
// Debian's reference plugins (1.1.1) predate upstream setting it, as knit
// does.
func WithoutNdiscNotify(state []string) []string {
	var out []string
	for _, l := range state {
		if !strings.Contains(l, "ndisc_notify") {
			out = append(out, l)
		}
	}
	return out
}
