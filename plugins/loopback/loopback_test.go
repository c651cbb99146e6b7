package loopback_test

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/testutil"
)

func conf(version string) []byte {
	return []byte(`{"cniVersion":"` + version + `","name":"lo","type":"loopback"}`)
}

func TestAddDelEveryVersion(t *testing.T) {
	testutil.RequireRoot(t)
	bin := filepath.Join(testutil.PluginDir(t), "loopback")
	for _, v := range cni.SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			ns := testutil.NewNS(t)
			req := &cni.Request{ContainerID: "c1", Netns: ns.Path(), IfName: "lo", Config: conf(v)}
			res := testutil.ExecAdd(t, bin, req)
			if len(res.Interfaces) != 1 || res.Interfaces[0].Name != "lo" {
				t.Fatalf("interfaces = %+v", res.Interfaces)
			}
			var sawV4 bool
			for _, ip := range res.IPs {
				sawV4 = sawV4 || ip.Address.IP.Equal(net.IPv4(127, 0, 0, 1))
			}
			if !sawV4 {
				t.Fatalf("no 127.0.0.1 in %+v", res.IPs)
			}
			lo, err := ns.H.LinkByName("lo")
			if err != nil || lo.Attrs().Flags&net.FlagUp == 0 {
				t.Fatalf("lo not up: %v", err)
			}
			if v >= "0.4.0" {
				req.Command = cni.CmdCheck
				if _, err := testutil.Exec(context.Background(), bin, req); err != nil {
					t.Fatalf("CHECK: %v", err)
				}
			}
			for range 2 { // DEL twice: idempotent
				req.Command = cni.CmdDel
				if _, err := testutil.Exec(context.Background(), bin, req); err != nil {
					t.Fatalf("DEL: %v", err)
				}
			}
			lo, _ = ns.H.LinkByName("lo")
			if lo.Attrs().Flags&net.FlagUp != 0 {
				t.Fatal("lo still up after DEL")
			}
		})
	}
}

func TestResultShapeByVersion(t *testing.T) {
	testutil.RequireRoot(t)
	bin := filepath.Join(testutil.PluginDir(t), "loopback")
	for v, wantVersionField := range map[string]bool{"0.3.1": true, "0.4.0": true, "1.0.0": false, "1.1.0": false} {
		ns := testutil.NewNS(t)
		req := &cni.Request{Command: cni.CmdAdd, ContainerID: "c1", Netns: ns.Path(), IfName: "lo", Config: conf(v)}
		out, err := testutil.Exec(context.Background(), bin, req)
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		var raw struct {
			CNIVersion string `json:"cniVersion"`
			IPs        []map[string]any
		}
		if err := json.Unmarshal(out, &raw); err != nil {
			t.Fatal(err)
		}
		if raw.CNIVersion != v {
			t.Errorf("result cniVersion %q, want %q", raw.CNIVersion, v)
		}
		_, has := raw.IPs[0]["version"]
		if has != wantVersionField {
			t.Errorf("%s: ips[].version present=%v, want %v", v, has, wantVersionField)
		}
	}
}

func TestDelWithoutNetns(t *testing.T) {
	bin := filepath.Join(testutil.PluginDir(t), "loopback")
	for _, netns := range []string{"", "/var/run/netns/does-not-exist"} {
		req := &cni.Request{Command: cni.CmdDel, ContainerID: "c1", Netns: netns, IfName: "lo", Config: conf("1.0.0")}
		if _, err := testutil.Exec(context.Background(), bin, req); err != nil {
			t.Errorf("DEL with netns %q: %v", netns, err)
		}
	}
}

func TestErrors(t *testing.T) {
	bin := filepath.Join(testutil.PluginDir(t), "loopback")
	ns := testutil.NewNS(t)
	cases := []struct {
		name string
		req  cni.Request
		code uint
	}{
		{"bad json", cni.Request{Config: []byte(`{"name":`)}, types.ErrDecodingFailure},
		{"unknown version", cni.Request{Config: conf("9.9.9")}, types.ErrIncompatibleCNIVersion},
		{"missing ifname", cni.Request{IfName: "-", Config: conf("1.0.0")}, types.ErrInvalidEnvironmentVariables},
		{"ifname too long", cni.Request{IfName: "abcdefghijklmnop", Config: conf("1.0.0")}, types.ErrInvalidEnvironmentVariables},
		{"ifname with slash", cni.Request{IfName: "a/b", Config: conf("1.0.0")}, types.ErrInvalidEnvironmentVariables},
	}
	for _, c := range cases {
		req := c.req
		req.Command, req.ContainerID, req.Netns = cni.CmdAdd, "c1", ns.Path()
		if req.IfName == "" {
			req.IfName = "lo"
		} else if req.IfName == "-" {
			req.IfName = ""
		}
		_, err := testutil.Exec(context.Background(), bin, &req)
		te, ok := err.(*types.Error)
		if !ok {
			t.Errorf("%s: error %v is not a CNI error", c.name, err)
			continue
		}
		if te.Code != c.code {
			t.Errorf("%s: code %d (%s), want %d", c.name, te.Code, te.Msg, c.code)
		}
	}
}
