package hostdevice

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/knit-cni/knit/pkg/attachtest"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/testutil"
)

// fakeSys builds a sysfs tree under a temp dir: a PCI device 0000:00:03.0
// whose netdev is hd0 (a veth in the test's host namespace), a virtio
// device 0000:00:04.0 with hd0 under virtio1/net, and a vfio-bound
// 0000:00:05.0.
func fakeSys(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{
		"devices/pci0000:00/0000:00:03.0/net/hd0",
		"devices/pci0000:00/0000:00:04.0/virtio1/net/hd0",
		"devices/pci0000:00/0000:00:05.0",
		"bus/pci/drivers/vfio-pci",
		"bus/pci/devices",
	} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"0000:00:03.0", "0000:00:04.0", "0000:00:05.0"} {
		if err := os.Symlink(filepath.Join(root, "devices/pci0000:00", id), filepath.Join(root, "bus/pci/devices", id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(root, "bus/pci/drivers/vfio-pci"), filepath.Join(root, "devices/pci0000:00/0000:00:05.0/driver")); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestSysfsSelectors(t *testing.T) {
	testutil.RequireRoot(t)
	host, peer := testutil.NewNS(t), testutil.NewNS(t)
	testutil.Veth(t, host, "hd0", peer, "p0")
	p := Plugin{HostNS: host.Path(), sysfs: fakeSys(t)}
	for name, sel := range map[string]string{
		"kernelpath": `"kernelpath":"/sys/devices/pci0000:00/0000:00:03.0"`,
		"pciBusID":   `"pciBusID":"0000:00:03.0"`,
		"deviceID":   `"pciBusID":"0000:00:99.0","runtimeConfig":{"deviceID":"0000:00:03.0"}`,
		"virtio":     `"pciBusID":"0000:00:04.0"`,
	} {
		t.Run(name, func(t *testing.T) {
			cont := testutil.NewNS(t)
			req := &cni.Request{Command: cni.CmdAdd, ContainerID: "c1", Netns: cont.Path(), IfName: "net1",
				Config: attachtest.Conf(t, "1.0.0", `"type":"host-device",`+sel, nil)}
			if _, err := p.Add(context.Background(), req); err != nil {
				t.Fatal(err)
			}
			if a := attachtest.Link(t, cont, "net1").Attrs().Alias; a != "hd0" {
				t.Errorf("moved %q, want hd0", a)
			}
			req.Command = cni.CmdDel
			if err := p.Del(context.Background(), req); err != nil {
				t.Fatal(err)
			}
			attachtest.Link(t, host, "hd0")
		})
	}
}

// A vfio-bound device has no netdev: nothing moves; IPAM still runs and
// its addresses are returned without an interface.
func TestDPDKDevice(t *testing.T) {
	testutil.RequireRoot(t)
	host := testutil.NewNS(t)
	p := Plugin{HostNS: host.Path(), sysfs: fakeSys(t)}
	ipam := &attachtest.FakeIPAM{Result: attachtest.IPResult(t, "10.4.9.2/24", "")}
	cont := testutil.NewNS(t)
	req := &cni.Request{Command: cni.CmdAdd, ContainerID: "c1", Netns: cont.Path(), IfName: "net1",
		Config:   attachtest.Conf(t, "1.0.0", `"type":"host-device","pciBusID":"0000:00:05.0","ipam":{"type":"fake-ipam"}`, nil),
		Delegate: cni.Registry{"fake-ipam": ipam}}
	r, err := p.Add(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	res := r.(*current.Result)
	if len(res.Interfaces) != 0 || len(res.IPs) != 1 {
		t.Errorf("result %+v", res)
	}
	if l := attachtest.Links(t, cont); len(l) != 0 {
		t.Errorf("container got %v", l)
	}
	req.Command = cni.CmdDel
	if err := p.Del(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if _, dels, _, _ := ipam.Counts(); dels != 1 {
		t.Errorf("IPAM DEL ran %d times", dels)
	}
}
