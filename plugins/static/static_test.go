package static_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/testutil"
	"github.com/knit-cni/knit/plugins/static"
)

const netns = "/var/run/netns/unused-by-ipam"

var reg = cni.Registry{"static": static.Plugin{}}

func conf(version, top, ipam string) []byte {
	s := `{"cniVersion":"` + version + `","name":"s","type":"bridge",`
	if top != "" {
		s += top + ","
	}
	return []byte(s + `"ipam":{"type":"static"` + ipam + `}}`)
}

func call(cmd cni.Command, config []byte, args string) (*current.Result, error) {
	req := &cni.Request{Command: cmd, ContainerID: "c1", Netns: netns, IfName: "eth0", Args: args, Config: config}
	res, err := testutil.Call(context.Background(), reg, "static", req)
	if err != nil || res == nil {
		return nil, err
	}
	return cni.AsCurrent(res)
}

func summary(res *current.Result) []string {
	var out []string
	for _, ip := range res.IPs {
		s := ip.Address.String()
		if ip.Gateway != nil {
			s += " gw " + ip.Gateway.String()
		}
		out = append(out, s)
	}
	return out
}

const base = `,"addresses":[{"address":"10.5.0.2/24","gateway":"10.5.0.1"},{"address":"fd00:5::2/64"}]`

var addCases = []struct {
	name, top, ipam, args string
	want                  []string
}{
	{"config", "", base, "", []string{"10.5.0.2/24 gw 10.5.0.1", "fd00:5::2/64"}},
	{"CNI_ARGS appends, GATEWAY applies to them", "", base, "IP=10.6.0.2/24,10.7.0.3/16;GATEWAY=10.6.0.1,10.5.0.254",
		[]string{"10.5.0.2/24 gw 10.5.0.1", "fd00:5::2/64", "10.6.0.2/24 gw 10.6.0.1", "10.7.0.3/16"}},
	{"later GATEWAY wins", "", "", "IP=10.6.0.3/24;GATEWAY=10.6.0.1,10.6.0.254", []string{"10.6.0.3/24 gw 10.6.0.254"}},
	{"args replace config and CNI_ARGS", `"args":{"cni":{"ips":["10.8.0.2/24"]}}`, base, "IP=10.6.0.2/24", []string{"10.8.0.2/24"}},
	{"runtimeConfig replaces everything", `"runtimeConfig":{"ips":["10.9.0.2/24","fd00:9::2/64"]},"args":{"cni":{"ips":["10.8.0.2/24"]}}`, base, "IP=10.6.0.2/24",
		[]string{"10.9.0.2/24", "fd00:9::2/64"}},
	{"no addresses", "", "", "", nil},
	{"IPv4-mapped", "", `,"addresses":[{"address":"::ffff:10.5.0.2/120"}]`, "", []string{"10.5.0.2/24"}},
	{"gateway outside the subnet is allowed", "", `,"addresses":[{"address":"10.5.0.2/24","gateway":"10.9.0.1"}]`, "", []string{"10.5.0.2/24 gw 10.9.0.1"}},
	{"IgnoreUnknown", "", "", "IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.6.0.4/24", []string{"10.6.0.4/24"}},
}

func TestAdd(t *testing.T) {
	for _, c := range addCases {
		t.Run(c.name, func(t *testing.T) {
			cfg := conf("1.0.0", c.top, c.ipam+`,"routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["10.5.0.53"],"search":["x"]}`)
			res, err := call(cni.CmdAdd, cfg, c.args)
			if err != nil {
				t.Fatal(err)
			}
			if got := summary(res); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("ips %v, want %v", got, c.want)
			}
			if len(res.Routes) != 1 || res.Routes[0].Dst.String() != "0.0.0.0/0" {
				t.Fatalf("routes %v", res.Routes)
			}
			if !reflect.DeepEqual(res.DNS, types.DNS{Nameservers: []string{"10.5.0.53"}, Search: []string{"x"}}) {
				t.Fatalf("dns %+v", res.DNS)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		name, top, ipam, args string
		code                  uint
		field                 string
	}{
		{"address not CIDR", "", `,"addresses":[{"address":"10.5.0.2/24"},{"address":"10.5.0.3"}]`, "", types.ErrInvalidNetworkConfig, "ipam.addresses[1].address"},
		{"bad gateway", "", `,"addresses":[{"address":"10.5.0.2/24","gateway":"zz"}]`, "", types.ErrInvalidNetworkConfig, "ipam.addresses[0].gateway"},
		{"CNI_ARGS IP not CIDR", "", "", "IP=10.6.0.2", types.ErrInvalidEnvironmentVariables, "CNI_ARGS IP"},
		{"CNI_ARGS bad GATEWAY", "", "", "IP=10.6.0.2/24;GATEWAY=foo", types.ErrInvalidEnvironmentVariables, "CNI_ARGS GATEWAY"},
		{"CNI_ARGS unknown key", "", "", "FOO=1", types.ErrInvalidEnvironmentVariables, "unknown args"},
		{"runtimeConfig not CIDR", `"runtimeConfig":{"ips":["10.9.0.2"]}`, "", "", types.ErrInvalidNetworkConfig, "runtimeConfig.ips"},
		{"args not CIDR", `"args":{"cni":{"ips":["x/24"]}}`, "", "", types.ErrInvalidNetworkConfig, "args.cni.ips"},
		{"bad json", "", `,"addresses":"x"`, "", types.ErrDecodingFailure, "addresses"},
		{"bad version", "", "", "", types.ErrIncompatibleCNIVersion, "9.9.9"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := conf("1.0.0", c.top, c.ipam)
			if c.code == types.ErrIncompatibleCNIVersion {
				cfg = conf("9.9.9", "", "")
			}
			_, err := call(cni.CmdAdd, cfg, c.args)
			te := cni.AsTypesError(err)
			if err == nil || te.Code != c.code || !strings.Contains(te.Msg+te.Details, c.field) {
				t.Fatalf("error %v (code %d), want code %d naming %q", err, te.Code, c.code, c.field)
			}
		})
	}
	_, err := call(cni.CmdAdd, []byte(`{"cniVersion":"1.0.0","name":"s"}`), "")
	if te := cni.AsTypesError(err); te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, "ipam") {
		t.Fatalf("missing ipam: %v", err)
	}
}

func TestDelAlwaysSucceeds(t *testing.T) {
	for _, cfg := range [][]byte{conf("1.0.0", "", base), conf("1.0.0", "", `,"addresses":[{"address":"bogus"}]`)} {
		for range 2 {
			if _, err := call(cni.CmdDel, cfg, ""); err != nil {
				t.Fatalf("DEL: %v", err)
			}
		}
	}
	if _, err := call(cni.CmdDel, []byte(`{"cniVersion":"1.0.0",`), ""); cni.AsTypesError(err).Code != types.ErrDecodingFailure {
		t.Fatalf("DEL of undecodable config: %v", err)
	}
}

func TestCheck(t *testing.T) {
	check := func(prev string) error {
		top := ""
		if prev != "" {
			top = `"prevResult":` + prev
		}
		_, err := call(cni.CmdCheck, conf("1.0.0", top, base), "")
		return err
	}
	ok := `{"cniVersion":"1.0.0","ips":[{"address":"10.5.0.2/24","gateway":"10.5.0.1"},{"address":"fd00:5::2/64","gateway":"fd00:5::1"},{"address":"192.168.1.1/24"}]}`
	if err := check(ok); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	bad := map[string]string{
		"":                 "prevResult",
		"missing address":  `{"cniVersion":"1.0.0","ips":[{"address":"10.5.0.2/24","gateway":"10.5.0.1"}]}`,
		"wrong gateway":    `{"cniVersion":"1.0.0","ips":[{"address":"10.5.0.2/24","gateway":"10.5.0.9"},{"address":"fd00:5::2/64"}]}`,
		"wrong prefix len": `{"cniVersion":"1.0.0","ips":[{"address":"10.5.0.2/16","gateway":"10.5.0.1"},{"address":"fd00:5::2/64"}]}`,
	}
	for name, prev := range bad {
		if err := check(prev); err == nil {
			t.Errorf("CHECK with %s succeeded", name)
		}
	}
}

func bins(t *testing.T) (knit, ref string) {
	return filepath.Join(testutil.PluginDir(t), "static"), testutil.RequireRef(t, "static")
}

func execAdd(bin string, config []byte, args string) ([]byte, error) {
	return testutil.Exec(context.Background(), bin, &cni.Request{Command: cni.CmdAdd, ContainerID: "c1",
		Netns: netns, IfName: "eth0", Args: args, Config: config})
}

func normalize(t *testing.T, out []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	if d, ok := m["dns"].(map[string]any); ok && len(d) == 0 {
		delete(m, "dns")
	}
	return m
}

// TestSideBySide compares the printed results of knit and the reference
// for every case and every spec version both speak.
func TestSideBySide(t *testing.T) {
	knit, ref := bins(t)
	for _, v := range cni.SupportedVersions() {
		for _, c := range addCases {
			cfg := conf(v, c.top, c.ipam+`,"routes":[{"dst":"0.0.0.0/0","gw":"10.5.0.1"}],"dns":{"nameservers":["10.5.0.53"]}`)
			kout, err := execAdd(knit, cfg, c.args)
			if err != nil {
				t.Fatalf("%s %s knit: %v", v, c.name, err)
			}
			var shape struct {
				CNIVersion string           `json:"cniVersion"`
				IPs        []map[string]any `json:"ips"`
			}
			json.Unmarshal(kout, &shape)
			if shape.CNIVersion != v {
				t.Fatalf("%s: result version %q", v, shape.CNIVersion)
			}
			if len(shape.IPs) > 0 {
				if _, has := shape.IPs[0]["version"]; has != (v < "1.0.0") {
					t.Fatalf("%s %s: ips[].version present=%v: %s", v, c.name, has, kout)
				}
			}
			if v == "1.1.0" {
				continue // the reference (1.1.1) stops at 1.0.0
			}
			rout, err := execAdd(ref, cfg, c.args)
			if err != nil {
				t.Fatalf("%s %s reference: %v", v, c.name, err)
			}
			if k, r := normalize(t, kout), normalize(t, rout); !reflect.DeepEqual(k, r) {
				t.Errorf("%s %s:\nknit      %s\nreference %s", v, c.name, kout, rout)
			}
		}
	}
}
