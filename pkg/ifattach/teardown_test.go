package ifattach

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/knit-cni/knit/pkg/attachtest"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/testutil"
)

// TestTeardownReleasesIPAMBeforeLink: IPAM DEL runs while the container's
// link still exists (the dhcp IPAM sends DHCPRELEASE through it, as with
// the reference plugins); the link goes afterwards, also when IPAM DEL
// failed, and the allocation is released when the namespace is gone.
func TestTeardownReleasesIPAMBeforeLink(t *testing.T) {
	testutil.RequireRoot(t)
	for name, ipamErr := range map[string]error{"ipam succeeds": nil, "ipam fails": errors.New("ipam down")} {
		t.Run(name, func(t *testing.T) {
			host, cont := testutil.NewNS(t), testutil.NewNS(t)
			testutil.Veth(t, host, "veth0", cont, "net1")
			var during []string
			fake := &attachtest.FakeIPAM{OnDel: func(req *cni.Request) error {
				during = attachtest.Links(t, cont)
				return ipamErr
			}}
			d := teardown(cont.Path(), fake)
			err := d.Run(context.Background())
			if ipamErr == nil && err != nil || ipamErr != nil && (err == nil || !strings.Contains(err.Error(), "ipam down")) {
				t.Fatalf("Run: %v, want IPAM's error %v", err, ipamErr)
			}
			if len(during) != 1 || during[0] != "net1" {
				t.Fatalf("links while IPAM DEL ran: %v, want net1 still there", during)
			}
			attachtest.NoLink(t, cont, "net1")
			if err := d.Run(context.Background()); err != nil && ipamErr == nil {
				t.Fatalf("second DEL: %v", err)
			}
			if _, dels, _, _ := fake.Counts(); dels != 2 {
				t.Fatalf("IPAM DEL ran %d times over two DELs, want 2", dels)
			}
		})
	}
	t.Run("namespace gone", func(t *testing.T) {
		fake := &attachtest.FakeIPAM{}
		if err := teardown("/nonexistent/netns", fake).Run(context.Background()); err != nil {
			t.Fatalf("Run: %v", err)
		}
		if _, dels, _, _ := fake.Counts(); dels != 1 {
			t.Fatalf("IPAM DEL ran %d times, want once", dels)
		}
	})
}

func teardown(netnsPath string, fake *attachtest.FakeIPAM) *Teardown {
	conf := &cni.NetConf{}
	raw := []byte(`{"cniVersion":"1.0.0","name":"n","type":"macvlan","ipam":{"type":"fake"}}`)
	if err := cni.ParseConfig(raw, conf); err != nil {
		panic(err)
	}
	return &Teardown{Conf: conf, Req: &cni.Request{Command: cni.CmdDel, ContainerID: "c1", Netns: netnsPath,
		IfName: "net1", Config: raw, Delegate: cni.Registry{"fake": fake}}}
}
