package tap_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/attachtest"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/testutil"
	"github.com/knit-cni/knit/plugins/builtin"
)

func bin(t *testing.T) string {
	testutil.RequireRoot(t)
	return filepath.Join(testutil.PluginDir(t), "tap")
}

func req(cmd cni.Command, cont *testutil.NS, conf []byte) *cni.Request {
	return &cni.Request{Command: cmd, ContainerID: "c1", Netns: cont.Path(), IfName: "tap0", Config: conf}
}

func TestAddCheckDelEveryVersion(t *testing.T) {
	b := bin(t)
	for _, v := range cni.SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			cont := testutil.NewNS(t)
			conf := attachtest.Conf(t, v, `"type":"tap","multiQueue":true,"owner":1000,"group":1001,"mtu":1400,`+
				`"mac":"02:00:00:00:aa:01",`+attachtest.Static("10.5.0.2/24", "10.5.0.1"), nil)
			r := req(cni.CmdAdd, cont, conf)
			out, err := testutil.Exec(context.Background(), b, r)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			res := testutil.DecodeResult(t, conf, out)
			l := attachtest.Link(t, cont, "tap0")
			tp, ok := l.(*netlink.Tuntap)
			if !ok || tp.Mode != netlink.TUNTAP_MODE_TAP {
				t.Fatalf("tap0 is %T %+v", l, l)
			}
			if tp.Owner != 1000 || tp.Group != 1001 || tp.Flags&netlink.TUNTAP_MULTI_QUEUE == 0 || tp.NonPersist {
				t.Errorf("owner %d group %d flags %v nonpersist %v", tp.Owner, tp.Group, tp.Flags, tp.NonPersist)
			}
			if l.Attrs().MTU != 1400 || l.Attrs().HardwareAddr.String() != "02:00:00:00:aa:01" || l.Attrs().Flags&net.FlagUp == 0 {
				t.Errorf("mtu %d mac %s flags %v", l.Attrs().MTU, l.Attrs().HardwareAddr, l.Attrs().Flags)
			}
			if len(res.Interfaces) != 1 || res.Interfaces[0].Mac != "02:00:00:00:aa:01" || res.Interfaces[0].Sandbox != cont.Path() ||
				len(res.IPs) != 1 || *res.IPs[0].Interface != 0 {
				t.Errorf("result %+v", res)
			}
			attachtest.HasAddr(t, cont, "tap0", "10.5.0.2/24")
			if v >= "0.4.0" {
				c := req(cni.CmdCheck, cont, attachtest.WithPrev(t, conf, res))
				if _, err := testutil.Exec(context.Background(), b, c); err != nil {
					t.Errorf("CHECK: %v", err)
				}
			}
			for range 2 {
				d := req(cni.CmdDel, cont, attachtest.WithPrev(t, conf, res))
				if _, err := testutil.Exec(context.Background(), b, d); err != nil {
					t.Fatalf("DEL: %v", err)
				}
			}
			attachtest.NoLink(t, cont, "tap0")
		})
	}
}

// Without owner and group the device is ownerless, single-queue.
func TestDefaults(t *testing.T) {
	b := bin(t)
	cont := testutil.NewNS(t)
	res := testutil.ExecAdd(t, b, req(cni.CmdAdd, cont, attachtest.Conf(t, "0.3.1", `"type":"tap"`, nil)))
	tp := attachtest.Link(t, cont, "tap0").(*netlink.Tuntap)
	if tp.Flags&netlink.TUNTAP_MULTI_QUEUE != 0 || tp.Owner != 0 || tp.Group != 0 {
		t.Errorf("flags %v owner %d group %d", tp.Flags, tp.Owner, tp.Group)
	}
	if len(res.IPs) != 0 || len(res.Interfaces) != 1 {
		t.Errorf("L2-only result %+v", res)
	}
	if tp.Attrs().Flags&net.FlagUp == 0 {
		t.Error("tap0 is down")
	}
}

// Frames the container sends through the tap come out of the device: the
// container's ARP request for its gateway is read from an attached queue.
func TestFramesReachTheDevice(t *testing.T) {
	b := bin(t)
	cont := testutil.NewNS(t)
	testutil.ExecAdd(t, b, req(cni.CmdAdd, cont, attachtest.Conf(t, "1.0.0", `"type":"tap",`+attachtest.Static("10.5.1.2/24", ""), nil)))
	var tapf *os.File
	err := cont.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ifr, _ := unix.NewIfreq("tap0")
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return err
		}
		if err := unix.SetNonblock(fd, true); err != nil {
			unix.Close(fd)
			return err
		}
		tapf = os.NewFile(uintptr(fd), "tap0")
		// Any datagram to 10.5.1.1 makes the kernel ARP for it.
		c, err := net.Dial("udp4", "10.5.1.1:9")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("x"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tapf.Close()
	if err := tapf.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for {
		n, err := tapf.Read(buf)
		if err != nil {
			t.Fatalf("no ARP request from the tap: %v", err)
		}
		f := buf[:n]
		if n >= 42 && binary.BigEndian.Uint16(f[12:14]) == 0x0806 && bytes.Equal(f[38:42], []byte{10, 5, 1, 1}) {
			return
		}
	}
}

func TestBridge(t *testing.T) {
	b := bin(t)
	cont := testutil.NewNS(t)
	if err := cont.H.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}); err != nil {
		t.Fatal(err)
	}
	conf := attachtest.Conf(t, "1.0.0", `"type":"tap","bridge":"br0"`, nil)
	res := testutil.ExecAdd(t, b, req(cni.CmdAdd, cont, conf))
	if m := attachtest.Link(t, cont, "tap0").Attrs().MasterIndex; m != attachtest.Link(t, cont, "br0").Attrs().Index {
		t.Errorf("tap0 master %d is not br0", m)
	}
	if _, err := testutil.Exec(context.Background(), b, req(cni.CmdCheck, cont, attachtest.WithPrev(t, conf, res))); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := cont.H.LinkSetNoMaster(attachtest.Link(t, cont, "tap0")); err != nil {
		t.Fatal(err)
	}
	if _, err := testutil.Exec(context.Background(), b, req(cni.CmdCheck, cont, attachtest.WithPrev(t, conf, res))); err == nil {
		t.Error("CHECK passed with the tap off its bridge")
	}
	other := testutil.NewNS(t)
	_, err := testutil.Exec(context.Background(), b, req(cni.CmdAdd, other, attachtest.Conf(t, "1.0.0", `"type":"tap","bridge":"nobr"`, nil)))
	attachtest.WantCode(t, err, types.ErrInvalidNetworkConfig, "bridge")
	if l := attachtest.Links(t, other); len(l) != 0 {
		t.Errorf("rejected ADD left %v", l)
	}
}

func TestBadConfig(t *testing.T) {
	b := bin(t)
	for name, c := range map[string]struct {
		body string
		code uint
		word string
	}{
		"negative mtu": {`"type":"tap","mtu":-1`, types.ErrInvalidNetworkConfig, "mtu"},
		"bad mac":      {`"type":"tap","mac":"nope"`, types.ErrInvalidNetworkConfig, "mac"},
		"owner type":   {`"type":"tap","owner":"root"`, types.ErrDecodingFailure, "owner"},
	} {
		t.Run(name, func(t *testing.T) {
			cont := testutil.NewNS(t)
			_, err := testutil.Exec(context.Background(), b, req(cni.CmdAdd, cont, attachtest.Conf(t, "1.0.0", c.body, nil)))
			attachtest.WantCode(t, err, c.code, c.word)
			if l := attachtest.Links(t, cont); len(l) != 0 {
				t.Errorf("rejected ADD left %v", l)
			}
		})
	}
}

func registry(ipam *attachtest.FakeIPAM) cni.Registry {
	reg := builtin.Registry()
	reg["fake-ipam"] = ipam
	return reg
}

// Failures after the tap exists remove it: an MTU the kernel refuses, an
// IPAM error, a route that cannot be added (which also releases IPAM).
func TestFailureRollback(t *testing.T) {
	testutil.RequireRoot(t)
	ipam := &attachtest.FakeIPAM{AddErr: cni.Errorf(cni.ErrRangeExhausted, "exhausted")}
	reg := registry(ipam)
	cases := []struct{ name, conf string }{
		{"mtu", `"type":"tap","mtu":70000`},
		{"ipam", `"type":"tap","ipam":{"type":"fake-ipam"}`},
		{"route", `"type":"tap","ipam":{"type":"fake-ipam"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "route" {
				ipam.AddErr = nil
				ipam.Result = attachtest.IPResult(t, "10.5.2.2/24", "", "192.168.0.0/16,172.31.9.9")
			}
			cont := testutil.NewNS(t)
			_, err := testutil.Call(context.Background(), reg, "tap", req(cni.CmdAdd, cont, attachtest.Conf(t, "1.0.0", c.conf, nil)))
			if err == nil {
				t.Fatal("ADD succeeded")
			}
			if l := attachtest.Links(t, cont); len(l) != 0 {
				t.Errorf("failed ADD left %v", l)
			}
		})
	}
	if adds, dels, _, _ := ipam.Counts(); adds != 2 || dels != 1 {
		t.Errorf("IPAM adds=%d dels=%d, want 2, 1", adds, dels)
	}
}

func TestDelWithoutNamespace(t *testing.T) {
	testutil.RequireRoot(t)
	ipam := &attachtest.FakeIPAM{}
	conf := attachtest.Conf(t, "1.0.0", `"type":"tap","ipam":{"type":"fake-ipam"}`, nil)
	for _, p := range []string{"", "/var/run/netns/knit-gone"} {
		r := &cni.Request{Command: cni.CmdDel, ContainerID: "c1", Netns: p, IfName: "tap0", Config: conf}
		if _, err := testutil.Call(context.Background(), registry(ipam), "tap", r); err != nil {
			t.Errorf("DEL with netns %q: %v", p, err)
		}
	}
	if _, dels, _, _ := ipam.Counts(); dels != 2 {
		t.Errorf("IPAM DEL ran %d times, want 2", dels)
	}
}

func TestPrevResultPassThrough(t *testing.T) {
	testutil.RequireRoot(t)
	ipam := &attachtest.FakeIPAM{Result: attachtest.IPResult(t, "10.5.3.2/24", "10.5.3.1")}
	prev := attachtest.IPResult(t, "192.168.9.2/24", "")
	prev.Interfaces = []*current.Interface{{Name: "eth0", Sandbox: "/x"}}
	prev.IPs[0].Interface = current.Int(0)
	cont := testutil.NewNS(t)
	r, err := testutil.Call(context.Background(), registry(ipam), "tap",
		req(cni.CmdAdd, cont, attachtest.Conf(t, "0.4.0", `"type":"tap","ipam":{"type":"fake-ipam"}`, prev)))
	if err != nil {
		t.Fatal(err)
	}
	res := attachtest.ResultOf(t, r)
	if len(res.Interfaces) != 2 || res.Interfaces[1].Name != "tap0" || len(res.IPs) != 2 || *res.IPs[1].Interface != 1 {
		t.Errorf("result %+v %+v", res.Interfaces, res.IPs)
	}
}

func TestHostLocal(t *testing.T) {
	b := bin(t)
	dir := t.TempDir()
	cont := testutil.NewNS(t)
	conf := attachtest.Conf(t, "1.0.0", `"type":"tap",`+attachtest.HostLocal(dir, "10.5.4.0/24", ""), nil)
	res := testutil.ExecAdd(t, b, req(cni.CmdAdd, cont, conf))
	attachtest.HasAddr(t, cont, "tap0", res.IPs[0].Address.String())
	if a := attachtest.Allocations(t, dir); len(a) != 1 {
		t.Fatalf("allocations %v", a)
	}
	if _, err := testutil.Exec(context.Background(), b, req(cni.CmdDel, cont, conf)); err != nil {
		t.Fatal(err)
	}
	if a := attachtest.Allocations(t, dir); len(a) != 0 {
		t.Errorf("DEL left allocations %v", a)
	}
}
