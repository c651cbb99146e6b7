package vethnet

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/knit-cni/knit/pkg/attachtest"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/testutil"
)

// TestDelReleasesIPAMBeforeLink: IPAM DEL runs while the container's
// interface still exists (the dhcp IPAM sends DHCPRELEASE through it, as
// with the reference plugins), and the link goes afterwards even when IPAM
// DEL failed.
func TestDelReleasesIPAMBeforeLink(t *testing.T) {
	testutil.RequireRoot(t)
	for name, ipamErr := range map[string]error{"ipam succeeds": nil, "ipam fails": errors.New("ipam down")} {
		t.Run(name, func(t *testing.T) {
			host, cont := testutil.NewNS(t), testutil.NewNS(t)
			testutil.Veth(t, host, "veth0", cont, "eth0")
			var during []string
			fake := &attachtest.FakeIPAM{OnDel: func(req *cni.Request) error {
				during = attachtest.Links(t, cont)
				return ipamErr
			}}
			req := &cni.Request{Command: cni.CmdDel, ContainerID: "c1", Netns: cont.Path(), IfName: "eth0",
				Config:   []byte(`{"cniVersion":"1.0.0","name":"n","type":"bridge","ipam":{"type":"fake"}}`),
				Delegate: cni.Registry{"fake": fake}}
			err := Del(context.Background(), req, "n", "fake")
			if ipamErr == nil && err != nil || ipamErr != nil && (err == nil || !strings.Contains(err.Error(), "ipam down")) {
				t.Fatalf("Del: %v, want IPAM's error %v", err, ipamErr)
			}
			if _, dels, _, _ := fake.Counts(); dels != 1 {
				t.Fatalf("IPAM DEL ran %d times, want once", dels)
			}
			if len(during) != 1 || during[0] != "eth0" {
				t.Fatalf("links while IPAM DEL ran: %v, want eth0 still there", during)
			}
			attachtest.NoLink(t, cont, "eth0")
			attachtest.NoLink(t, host, "veth0")
		})
	}
}
