package hostlocal_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/testutil"
)

func TestAllocateRelease(t *testing.T) {
	e := newEnv(t, `"subnet":"10.1.0.0/29"`)
	for i, want := range []string{"10.1.0.2", "10.1.0.3", "10.1.0.4"} {
		res := e.mustAdd(fmt.Sprintf("c%d", i))
		if got := ips(res); !reflect.DeepEqual(got, []string{want + "/29 gw 10.1.0.1"}) {
			t.Fatalf("ADD c%d: %v", i, got)
		}
	}
	e.wantFiles(map[string]string{"10.1.0.2": "c0\r\neth0", "10.1.0.3": "c1\r\neth0", "10.1.0.4": "c2\r\neth0"})
	if b, _ := os.ReadFile(filepath.Join(e.netDir(), "last_reserved_ip.0")); string(b) != "10.1.0.4" {
		t.Fatalf("last_reserved_ip.0 = %q", b)
	}
	if fi, err := os.Stat(filepath.Join(e.netDir(), "lock")); err != nil || fi.Mode().Perm() != 0o750 {
		t.Fatalf("lock file: %v %v", fi, err)
	}
	for range 2 { // DEL is idempotent
		e.mustDel("c1", "eth0")
	}
	e.mustDel("c1", "eth1") // another interface of the container holds nothing
	e.wantFiles(map[string]string{"10.1.0.2": "c0\r\neth0", "10.1.0.4": "c2\r\neth0"})
	// Round robin: the next address after the last reserved one, then wrap.
	if got := firstIP(e.mustAdd("c3")); got != "10.1.0.5" {
		t.Fatalf("next = %s, want 10.1.0.5", got)
	}
	if got := firstIP(e.mustAdd("c4")); got != "10.1.0.6" {
		t.Fatalf("next = %s, want 10.1.0.6", got)
	}
	if got := firstIP(e.mustAdd("c5")); got != "10.1.0.3" {
		t.Fatalf("after wrap = %s, want 10.1.0.3 (.1 is the gateway, .2 taken)", got)
	}
}

func TestDuplicateAdd(t *testing.T) {
	e := newEnv(t, `"subnet":"10.1.0.0/24"`)
	e.mustAdd("c1")
	_, err := e.add("c1", "eth0", "")
	wantCode(t, err, cni.ErrAddressInUse, "duplicate allocation")
	if _, err := e.add("c1", "eth1", ""); err != nil {
		t.Fatalf("second interface of the same container: %v", err)
	}
	if n := len(e.files()); n != 2 {
		t.Fatalf("%d files, want 2", n)
	}
}

func TestDelWithoutAllocations(t *testing.T) {
	e := newEnv(t, `"subnet":"10.1.0.0/24"`)
	e.mustDel("c1", "eth0")
	if _, err := os.Stat(e.netDir()); !os.IsNotExist(err) {
		t.Fatalf("DEL created the network directory: %v", err)
	}
	// DEL tolerates a config whose ranges have become invalid since ADD.
	e.mustAdd("c1")
	e.ipam = `"subnet":"10.1.0.0/33"`
	e.mustDel("c1", "eth0")
	e.wantFiles(map[string]string{})
}

func TestConfigForms(t *testing.T) {
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(resolv, []byte("# c\n; c\nnameserver 10.0.0.53\nnameserver 10.0.0.54\ndomain example.com\nsearch a.example b.example\noptions ndots:2 edns0\nbogus\n"), 0o644)
	cases := []struct {
		name, ipam, top string
		want            []string
	}{
		{"legacy flat", `"subnet":"10.2.0.0/24","rangeStart":"10.2.0.10","rangeEnd":"10.2.0.20","gateway":"10.2.0.254"`, "",
			[]string{"10.2.0.10/24 gw 10.2.0.254"}},
		{"ranges", `"ranges":[[{"subnet":"10.3.0.0/16"}]]`, "", []string{"10.3.0.2/16 gw 10.3.0.1"}},
		{"gateway not .1 frees .1", `"ranges":[[{"subnet":"10.3.0.0/24","gateway":"10.3.0.9"}]]`, "", []string{"10.3.0.1/24 gw 10.3.0.9"}},
		{"two ranges in a set", `"ranges":[[{"subnet":"10.4.0.0/30"},{"subnet":"10.5.0.0/24"}]]`, "", []string{"10.4.0.2/30 gw 10.4.0.1"}},
		{"ipv6", `"ranges":[[{"subnet":"fd00:1::/64"}]]`, "", []string{"fd00:1::2/64 gw fd00:1::1"}},
		{"dual stack", `"ranges":[[{"subnet":"10.6.0.0/24"}],[{"subnet":"fd00:6::/120","rangeStart":"fd00:6::10"}]]`, "",
			[]string{"10.6.0.2/24 gw 10.6.0.1", "fd00:6::10/120 gw fd00:6::1"}},
		{"legacy plus ranges", `"subnet":"10.7.0.0/24","ranges":[[{"subnet":"fd00:7::/64"}]]`, "",
			[]string{"10.7.0.2/24 gw 10.7.0.1", "fd00:7::2/64 gw fd00:7::1"}},
		{"ipRanges capability first", `"ranges":[[{"subnet":"10.8.0.0/24"}]]`, `"runtimeConfig":{"ipRanges":[[{"subnet":"fd00:8::/64"}]]}`,
			[]string{"fd00:8::2/64 gw fd00:8::1", "10.8.0.2/24 gw 10.8.0.1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, c.ipam+`,"routes":[{"dst":"0.0.0.0/0"},{"dst":"192.168.0.0/16","gw":"10.2.0.5"}],"resolvConf":"`+resolv+`"`)
			e.top = c.top
			res := e.mustAdd("c1")
			if got := ips(res); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("ips = %v, want %v", got, c.want)
			}
			if len(res.Routes) != 2 || res.Routes[1].GW.String() != "10.2.0.5" {
				t.Fatalf("routes = %v", res.Routes)
			}
			wantDNS := types.DNS{Nameservers: []string{"10.0.0.53", "10.0.0.54"}, Domain: "example.com",
				Search: []string{"a.example", "b.example"}, Options: []string{"ndots:2", "edns0"}}
			if !reflect.DeepEqual(res.DNS, wantDNS) {
				t.Fatalf("dns = %+v", res.DNS)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		name, ipam, top, args string
		code                  uint
		field                 string
	}{
		{"no ranges", ``, "", "", types.ErrInvalidNetworkConfig, "ipam.ranges"},
		{"empty set", `"ranges":[[]]`, "", "", types.ErrInvalidNetworkConfig, "ipam.ranges[0]: empty range set"},
		{"no subnet", `"ranges":[[{"rangeStart":"10.0.0.1"}]]`, "", "", types.ErrInvalidNetworkConfig, "ipam.ranges[0][0].subnet"},
		{"bad subnet", `"subnet":"10.0.0.0/33"`, "", "", types.ErrInvalidNetworkConfig, "ipam.subnet"},
		{"host bits", `"subnet":"10.0.0.5/24"`, "", "", types.ErrInvalidNetworkConfig, "host bits"},
		{"too small", `"ranges":[[{"subnet":"10.0.0.0/31"}]]`, "", "", types.ErrInvalidNetworkConfig, "too small"},
		{"start outside", `"ranges":[[{"subnet":"10.0.0.0/24","rangeStart":"10.0.1.1"}]]`, "", "", types.ErrInvalidNetworkConfig, "ipam.ranges[0][0].rangeStart"},
		{"end outside", `"ranges":[[{"subnet":"10.0.0.0/24","rangeEnd":"10.0.1.1"}]]`, "", "", types.ErrInvalidNetworkConfig, "ipam.ranges[0][0].rangeEnd"},
		{"end before start", `"ranges":[[{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.9","rangeEnd":"10.0.0.3"}]]`, "", "", types.ErrInvalidNetworkConfig, "before rangeStart"},
		{"gateway outside", `"ranges":[[{"subnet":"10.0.0.0/24","gateway":"10.9.0.1"}]]`, "", "", types.ErrInvalidNetworkConfig, "ipam.ranges[0][0].gateway"},
		{"bad gateway", `"ranges":[[{"subnet":"10.0.0.0/24","gateway":"ten"}]]`, "", "", types.ErrInvalidNetworkConfig, "ipam.ranges[0][0].gateway"},
		{"mixed families", `"ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"fd00::/64"}]]`, "", "", types.ErrInvalidNetworkConfig, "mixed address families"},
		{"overlap in set", `"ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"10.0.0.128/25"}]]`, "", "", types.ErrInvalidNetworkConfig, "ranges 10.0.0.1-10.0.0.254 and 10.0.0.129-10.0.0.254 overlap"},
		{"overlapping sets", `"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"10.0.0.0/16"}]]`, "", "", types.ErrInvalidNetworkConfig, "range set 0 (10.0.0.1-10.0.0.254) overlaps with range set 1"},
		{"legacy overlaps ranges", `"subnet":"10.0.0.0/24","ranges":[[{"subnet":"10.0.0.0/24"}]]`, "", "", types.ErrInvalidNetworkConfig, "overlaps"},
		{"disjoint ranges of one subnet are fine", `"ranges":[[{"subnet":"10.0.0.0/24","rangeEnd":"10.0.0.9"},{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.10"}]]`, "", "", 0, ""},
		{"bad json", `"ranges":"x"`, "", "", types.ErrDecodingFailure, "ranges"},
		{"missing resolv.conf", `"subnet":"10.0.0.0/24","resolvConf":"/nonexistent/resolv.conf"`, "", "", types.ErrInvalidNetworkConfig, "ipam.resolvConf"},
		{"unknown CNI_ARGS", `"subnet":"10.0.0.0/24"`, "", "FOO=bar", types.ErrInvalidEnvironmentVariables, "unknown args"},
		{"GATEWAY is unknown to host-local", `"subnet":"10.0.0.0/24"`, "", "GATEWAY=10.0.0.1", types.ErrInvalidEnvironmentVariables, "unknown args"},
		{"malformed CNI_ARGS", `"subnet":"10.0.0.0/24"`, "", "IP", types.ErrInvalidEnvironmentVariables, "invalid pair"},
		{"unknown CNI_ARGS ignored", `"subnet":"10.0.0.0/24"`, "", "IgnoreUnknown=1;K8S_POD_NAME=p", 0, ""},
		{"bad CNI_ARGS IP", `"subnet":"10.0.0.0/24"`, "", "IP=10.0.0.300", types.ErrInvalidEnvironmentVariables, "CNI_ARGS IP"},
		{"bad runtimeConfig ip", `"subnet":"10.0.0.0/24"`, `"runtimeConfig":{"ips":["nope"]}`, "", types.ErrInvalidNetworkConfig, "runtimeConfig.ips"},
		{"bad args ip", `"subnet":"10.0.0.0/24"`, `"args":{"cni":{"ips":["10.0.0.5/99"]}}`, "", types.ErrInvalidNetworkConfig, "args.cni.ips"},
		{"bad ipRanges", `"subnet":"10.0.0.0/24"`, `"runtimeConfig":{"ipRanges":[[{"subnet":"x"}]]}`, "", types.ErrInvalidNetworkConfig, "runtimeConfig.ipRanges[0][0].subnet"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, c.ipam)
			e.top = c.top
			_, err := e.add("c1", "eth0", c.args)
			if c.code == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantCode(t, err, c.code, c.field)
			e.wantFiles(map[string]string{})
		})
	}
	t.Run("missing ipam", func(t *testing.T) {
		_, err := testutil.Call(context.Background(), reg, "host-local",
			&cni.Request{Command: cni.CmdAdd, ContainerID: "c", IfName: "eth0", Config: []byte(`{"cniVersion":"1.0.0","name":"n"}`)})
		wantCode(t, err, types.ErrInvalidNetworkConfig, "ipam")
	})
	t.Run("bad network name", func(t *testing.T) {
		e := newEnv(t, `"subnet":"10.0.0.0/24"`)
		e.name = "../escape"
		_, err := e.add("c1", "eth0", "")
		wantCode(t, err, types.ErrInvalidNetworkConfig, "name")
	})
}

func TestRequestedIPs(t *testing.T) {
	const ipam = `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00:1::/64"}]]`
	cases := []struct {
		name, top, args string
		want            []string
	}{
		{"runtimeConfig", `"runtimeConfig":{"ips":["10.1.0.50/24","fd00:1::50"]}`, "", []string{"10.1.0.50", "fd00:1::50"}},
		{"args", `"args":{"cni":{"ips":["10.1.0.51"]}}`, "", []string{"10.1.0.51", "fd00:1::2"}},
		{"CNI_ARGS", "", "IP=10.1.0.52,fd00:1::52", []string{"10.1.0.52", "fd00:1::52"}},
		{"CNI_ARGS with IgnoreUnknown", "", "IgnoreUnknown=true;K8S_POD_NAMESPACE=x;IP=10.1.0.53", []string{"10.1.0.53", "fd00:1::2"}},
		// The reference treats the three sources as one list: one v4 from
		// runtimeConfig and one v6 from CNI_ARGS both apply.
		{"sources combine", `"runtimeConfig":{"ips":["10.1.0.54"]}`, "IP=fd00:1::54", []string{"10.1.0.54", "fd00:1::54"}},
		{"same address twice", `"runtimeConfig":{"ips":["10.1.0.55"]},"args":{"cni":{"ips":["10.1.0.55/24"]}}`, "IP=10.1.0.55", []string{"10.1.0.55", "fd00:1::2"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, ipam)
			e.top = c.top
			res, err := e.add("c1", "eth0", c.args)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, ip := range res.IPs {
				got = append(got, ip.Address.IP.String())
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
	errs := []struct {
		name, top, args string
		code            uint
		substr          string
	}{
		{"taken", "", "IP=10.1.0.9", cni.ErrAddressInUse, "CNI_ARGS IP: requested address 10.1.0.9 is already allocated"},
		{"outside every range", `"runtimeConfig":{"ips":["10.9.9.9"]}`, "", types.ErrInvalidNetworkConfig, "runtimeConfig.ips: requested address 10.9.9.9 is not in any range set"},
		{"gateway", `"args":{"cni":{"ips":["10.1.0.1"]}}`, "", types.ErrInvalidNetworkConfig, "args.cni.ips: requested address 10.1.0.1 is the gateway"},
		{"two in one set", `"runtimeConfig":{"ips":["10.1.0.60"]}`, "IP=10.1.0.61", types.ErrInvalidNetworkConfig, "both in range set 0"},
		{"second set's address taken releases the first", `"runtimeConfig":{"ips":["10.1.0.70","fd00:1::9"]}`, "", cni.ErrAddressInUse, "fd00:1::9"},
	}
	for _, c := range errs {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, ipam)
			if _, err := e.add("holder", "eth0", "IP=10.1.0.9,fd00:1::9"); err != nil {
				t.Fatal(err)
			}
			before := e.files()
			e.top = c.top
			_, err := e.add("c1", "eth0", c.args)
			wantCode(t, err, c.code, c.substr)
			e.wantFiles(before)
		})
	}
}

func TestExhaustionReleasesEarlierSets(t *testing.T) {
	e := newEnv(t, `"ranges":[[{"subnet":"fd00:2::/64"}],[{"subnet":"10.1.0.0/29","rangeStart":"10.1.0.2","rangeEnd":"10.1.0.4"}]]`)
	for i := range 3 {
		e.mustAdd(fmt.Sprintf("c%d", i))
	}
	before := e.files()
	_, err := e.add("c9", "eth0", "")
	wantCode(t, err, cni.ErrRangeExhausted, "range set 1: no IP addresses available in 10.1.0.2-10.1.0.4")
	e.wantFiles(before) // set 0's address for c9 was released
	e.mustDel("c1", "eth0")
	res := e.mustAdd("c9")
	if got := res.IPs[1].Address.IP.String(); got != "10.1.0.3" {
		t.Fatalf("freed address not reused: %s", got)
	}
}

func TestExhaustionCrowded(t *testing.T) {
	// More taken addresses than allocation tries blindly: the directory
	// listing path must still find the one free address.
	e := newEnv(t, `"subnet":"10.1.0.0/26"`)
	for i := range 61 {
		e.mustAdd(fmt.Sprintf("c%d", i))
	}
	e.mustDel("c3", "eth0") // frees 10.1.0.5
	if got := firstIP(e.mustAdd("late")); got != "10.1.0.5" {
		t.Fatalf("got %s", got)
	}
	_, err := e.add("more", "eth0", "")
	wantCode(t, err, cni.ErrRangeExhausted, "10.1.0.1-10.1.0.62")
}

func TestCheck(t *testing.T) {
	e := newEnv(t, `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00:3::/64"}]]`)
	e.mustAdd("c1")
	if err := e.call(cni.CmdCheck, "c1", "eth0"); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	withPrev := func(prev string) error {
		e.top = `"prevResult":` + prev
		defer func() { e.top = "" }()
		return e.call(cni.CmdCheck, "c1", "eth0")
	}
	ok := `{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.2/24"},{"address":"fd00:3::2/64"},{"address":"192.168.9.9/24"}]}`
	if err := withPrev(ok); err != nil {
		t.Fatalf("CHECK with matching prevResult (plus a foreign address): %v", err)
	}
	if err := withPrev(`{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.7/24"}]}`); err == nil || !strings.Contains(err.Error(), "10.1.0.7") {
		t.Fatalf("CHECK with someone else's address: %v", err)
	}
	if err := e.call(cni.CmdCheck, "c2", "eth0"); err == nil {
		t.Fatal("CHECK of an attachment holding nothing succeeded")
	}
	e.mustDel("c1", "eth0")
	if err := e.call(cni.CmdCheck, "c1", "eth0"); err == nil {
		t.Fatal("CHECK after DEL succeeded")
	}
}

func TestGC(t *testing.T) {
	e := newEnv(t, `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00:4::/64"}]]`)
	for _, cid := range []string{"keep", "drop1", "drop2"} {
		e.mustAdd(cid)
	}
	if _, err := e.add("keep", "net1", ""); err != nil {
		t.Fatal(err)
	}
	// A legacy file (container ID only) of a valid container survives;
	// an empty file names no one and goes.
	os.WriteFile(filepath.Join(e.netDir(), "10.1.0.200"), []byte("keep"), 0o644)
	os.WriteFile(filepath.Join(e.netDir(), "10.1.0.201"), nil, 0o644)
	gc := `{"cniVersion":"1.1.0","name":"net1","ipam":{"type":"host-local","dataDir":"` + e.dataDir +
		`"},"cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"},{"containerID":"keep","ifname":"net1"},{"containerID":"gone","ifname":"eth0"}]}`
	if _, err := testutil.Call(context.Background(), reg, "host-local", &cni.Request{Command: cni.CmdGC, Config: []byte(gc)}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	var owners []string
	for _, o := range e.files() {
		owners = append(owners, o)
	}
	slices.Sort(owners)
	want := []string{"keep", "keep\r\neth0", "keep\r\neth0", "keep\r\nnet1", "keep\r\nnet1"}
	if !reflect.DeepEqual(owners, want) {
		t.Fatalf("after GC: %q, want %q", owners, want)
	}
	// The index agrees: the dropped attachments hold nothing, and their
	// addresses are free again.
	if err := e.call(cni.CmdCheck, "drop1", "eth0"); err == nil {
		t.Fatal("drop1 still holds addresses")
	}
	e.mustDel("keep", "eth0")
	e.mustDel("keep", "net1")
	e.wantFiles(map[string]string{"10.1.0.200": "keep"})
	e.mustDel("keep", "eth9") // no own files: the legacy file goes, as in the reference
	e.wantFiles(map[string]string{})
}

func TestLegacyFiles(t *testing.T) {
	e := newEnv(t, `"subnet":"10.1.0.0/24"`)
	os.MkdirAll(e.netDir(), 0o755)
	os.WriteFile(filepath.Join(e.netDir(), "10.1.0.7"), []byte("old\n"), 0o644)
	_, err := e.add("old", "eth0", "")
	wantCode(t, err, cni.ErrAddressInUse, "10.1.0.7 is already allocated to container old")
	if err := e.call(cni.CmdCheck, "old", "eth0"); err != nil {
		t.Fatalf("CHECK sees the legacy file: %v", err)
	}
	e.mustDel("old", "eth0")
	e.wantFiles(map[string]string{})
}

// TestStaleIndexIsHarmless forges index entries behind the stamp's back:
// the index may only ever make knit see less than the address files say,
// never release or double-book someone else's address.
func TestStaleIndexIsHarmless(t *testing.T) {
	e := newEnv(t, `"subnet":"10.1.0.0/24"`)
	e.mustAdd("a")
	e.mustAdd("b")
	idx := filepath.Join(e.netDir(), ".knit")
	stamp, _ := os.ReadFile(filepath.Join(idx, "stamp"))
	ents, _ := os.ReadDir(idx)
	// Point a's entry at b's address, then restore the mtimes so the stamp
	// still matches.
	for _, d := range ents {
		p := filepath.Join(idx, d.Name())
		if b, _ := os.ReadFile(p); strings.Contains(string(b), `"a\r\neth0"`) {
			os.WriteFile(p, []byte(`{"owner":"a\r\neth0","ips":["10.1.0.3"]}`), 0o644)
		}
	}
	restoreMtimes(t, e.netDir(), idx, string(stamp))
	e.mustDel("a", "eth0")
	if e.files()["10.1.0.3"] != "b\r\neth0" {
		t.Fatalf("DEL of a released b's address: %q", e.files())
	}
	// A malformed entry makes knit rebuild from the address files.
	for _, d := range ents {
		if d.Name() != "stamp" {
			os.WriteFile(filepath.Join(idx, d.Name()), []byte("garbage"), 0o644)
		}
	}
	stamp, _ = os.ReadFile(filepath.Join(idx, "stamp"))
	restoreMtimes(t, e.netDir(), idx, string(stamp))
	e.mustDel("b", "eth0")
	if _, ok := e.files()["10.1.0.3"]; ok {
		t.Fatalf("b's address not released after the index was rebuilt: %q", e.files())
	}
}

// restoreMtimes sets both directories' mtimes back to what the stamp says.
func restoreMtimes(t *testing.T, netDir, idx, stamp string) {
	t.Helper()
	var sec, nsec, sec2, nsec2 int64
	var ver string
	if _, err := fmt.Sscanf(stamp, "%s %d.%d %d.%d", &ver, &sec, &nsec, &sec2, &nsec2); err != nil {
		t.Fatalf("stamp %q: %v", stamp, err)
	}
	os.Chtimes(netDir, time.Time{}, time.Unix(sec, nsec))
	os.Chtimes(idx, time.Time{}, time.Unix(sec2, nsec2))
}

func TestCrashLeftoversAndLostIndex(t *testing.T) {
	e := newEnv(t, `"subnet":"10.1.0.0/24"`)
	e.mustAdd("a")
	os.MkdirAll(filepath.Join(e.netDir(), ".knit.new-123"), 0o755)
	os.RemoveAll(filepath.Join(e.netDir(), ".knit"))
	e.mustDel("a", "eth0")
	e.wantFiles(map[string]string{})
	if _, err := os.Stat(filepath.Join(e.netDir(), ".knit.new-123")); !os.IsNotExist(err) {
		t.Fatalf("leftover index directory kept: %v", err)
	}
}

func TestLockHonoursContext(t *testing.T) {
	e := newEnv(t, `"subnet":"10.1.0.0/24"`)
	e.mustAdd("a")
	f, err := os.Open(filepath.Join(e.netDir(), "lock"))
	if err != nil {
		t.Fatal(err)
	}
	if err := flockFile(f); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = testutil.Call(ctx, reg, "host-local", e.req(cni.CmdAdd, "b", "eth0", ""))
	wantCode(t, err, types.ErrTryAgainLater, "lock")
	done := make(chan error, 1)
	go func() { _, err := e.add("c", "eth0", ""); done <- err }()
	select {
	case err := <-done:
		t.Fatalf("ADD finished while the lock was held: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	f.Close() // releases the lock
	if err := <-done; err != nil {
		t.Fatalf("ADD after the lock was released: %v", err)
	}
	if len(e.files()) != 2 {
		t.Fatalf("files: %q", e.files())
	}
}
