// Package hostdevice is the CNI host-device plugin: it moves an existing
// host interface into the container, renamed to CNI_IFNAME, and moves it
// back under its original name on DEL. Config keys are those of
// containernetworking/plugins' host-device; the original name is kept in
// the link's alias (IFLA_IFALIAS) as the reference does, so either
// implementation can undo the other's ADD.
package hostdevice

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/ifattach"
	"github.com/knit-cni/knit/pkg/ipam"
	"github.com/knit-cni/knit/pkg/netns"
)

// Config is host-device's network configuration. One of the four
// selectors is required; runtimeConfig.deviceID (a PCI address from a
// device plugin) overrides pciBusID.
type Config struct {
	cni.NetConf
	Device        string `json:"device"`
	HWAddr        string `json:"hwaddr"`
	KernelPath    string `json:"kernelpath"`
	PCIAddr       string `json:"pciBusID"`
	RuntimeConfig struct {
		DeviceID string `json:"deviceID,omitempty"`
	} `json:"runtimeConfig,omitempty"`

	hwaddr net.HardwareAddr
}

// Plugin implements cni.Plugin.
type Plugin struct {
	// HostNS is the namespace devices are taken from and returned to; empty
	// means the plugin process's own. Tests point it at a scratch
	// namespace.
	HostNS string
	// sysfs is where sysfs is mounted ("/sys" when empty); tests use a fake
	// tree for kernelpath and pciBusID.
	sysfs string
}

func decode(data []byte) (*Config, error) {
	var c Config
	if err := cni.ParseConfig(data, &c); err != nil {
		return nil, err
	}
	if c.RuntimeConfig.DeviceID != "" {
		c.PCIAddr = c.RuntimeConfig.DeviceID
	}
	return &c, nil
}

// parse decodes and validates the config.
func parse(data []byte) (*Config, error) {
	c, err := decode(data)
	if err != nil {
		return nil, err
	}
	if c.Device == "" && c.HWAddr == "" && c.KernelPath == "" && c.PCIAddr == "" {
		return nil, cni.ConfigError("device", `specify either "device", "hwaddr", "kernelpath" or "pciBusID"`)
	}
	if c.HWAddr != "" {
		if c.hwaddr, err = net.ParseMAC(c.HWAddr); err != nil {
			return nil, cni.ConfigError("hwaddr", "invalid MAC address %q", c.HWAddr)
		}
	}
	if c.KernelPath != "" && (!strings.HasPrefix(c.KernelPath, "/sys/devices/") || strings.Contains(c.KernelPath, "..")) {
		return nil, cni.ConfigError("kernelpath", "kernel device path %q must be absolute and begin with /sys/devices/", c.KernelPath)
	}
	if strings.ContainsAny(c.PCIAddr, "/\x00") || strings.Contains(c.PCIAddr, "..") {
		return nil, cni.ConfigError("pciBusID", "invalid PCI address %q", c.PCIAddr)
	}
	return c, nil
}

func (p Plugin) sysRoot() string {
	if p.sysfs != "" {
		return p.sysfs
	}
	return "/sys"
}

// Add moves the device into the container as CNI_IFNAME and addresses it.
// A device bound to a user-space (DPDK) driver has no netdev: nothing
// moves, and the result carries only the IPAM addresses, as the reference.
func (p Plugin) Add(ctx context.Context, req *cni.Request) (types.Result, error) {
	c, err := parse(req.Config)
	if err != nil {
		return nil, err
	}
	host, err := ifattach.OpenHost(p.HostNS)
	if err != nil {
		return nil, err
	}
	defer host.Close()
	cont, err := netns.OpenTarget(req.Netns)
	if err != nil {
		return nil, err
	}
	defer cont.Close()
	dev, err := p.find(host.NL, c)
	if err != nil {
		return nil, err
	}
	if dev == nil {
		return dpdkAdd(ctx, req, c)
	}
	var saved state
	s := &ifattach.Setup{Req: req, Conf: &c.NetConf, Cont: cont, IPAM: ifattach.IPAMOptional,
		Create: func(context.Context) (netlink.Link, error) {
			l, st, err := moveIn(host, cont, dev, req.IfName)
			saved = st
			return l, err
		},
		Remove: func(context.Context) error { return saved.restore(host, cont, req.IfName) },
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s.Run(ctx)
}

// dpdkAdd runs IPAM for a device that stays with its user-space driver.
func dpdkAdd(ctx context.Context, req *cni.Request, c *Config) (types.Result, error) {
	ipamType, err := c.IPAMType()
	if err != nil {
		return nil, err
	}
	prev, err := c.PrevResult()
	if err != nil {
		return nil, err
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	if prev != nil {
		res = prev
	}
	if ipamType == "" {
		return res, nil
	}
	ipamRes, err := ipam.Add(ctx, req, ipamType)
	if err != nil {
		return nil, err
	}
	res.IPs = append(res.IPs, ipamRes.IPs...)
	res.Routes = append(res.Routes, ipamRes.Routes...)
	if !c.DNS.IsEmpty() {
		res.DNS = c.DNS
	} else if res.DNS.IsEmpty() {
		res.DNS = ipamRes.DNS
	}
	return res, nil
}

// Del moves the device back to the host under its original name and
// releases its addresses. The addresses are released also when the
// namespace is gone or not given (the reference leaks them then,
// containernetworking/plugins#1196); a physical device whose namespace died
// is back in the host under its container name, and is renamed to the
// configured device name.
func (p Plugin) Del(ctx context.Context, req *cni.Request) error {
	c, err := decode(req.Config)
	if err != nil {
		return err
	}
	host, err := ifattach.OpenHost(p.HostNS)
	if err != nil {
		return err
	}
	defer host.Close()
	moved := false
	d := &ifattach.Teardown{Req: req, Conf: &c.NetConf, Remove: func(_ context.Context, cont *netns.Target) error {
		moved = true
		return moveOut(host, cont, req.IfName)
	}}
	if err := d.Run(ctx); err != nil {
		return err
	}
	if !moved {
		return recoverOrphan(host.NL, c.Device)
	}
	return nil
}

// Check compares prevResult with the device in the container.
func (p Plugin) Check(ctx context.Context, req *cni.Request) error {
	c, err := parse(req.Config)
	if err != nil {
		return err
	}
	chk := &ifattach.Check{Req: req, Conf: &c.NetConf, Verify: func(_ *netlink.Handle, l netlink.Link) error {
		if l.Attrs().Alias == "" {
			return fmt.Errorf("interface %s carries no original name in its alias", l.Attrs().Name)
		}
		return nil
	}}
	return chk.Run(ctx)
}

// GC forwards to the IPAM plugin, the only holder of state.
func (p Plugin) GC(ctx context.Context, req *cni.Request, _ []cni.Attachment) error {
	return ifattach.GC(ctx, req)
}

// Status reports the IPAM plugin's readiness.
func (p Plugin) Status(ctx context.Context, req *cni.Request) error {
	return ifattach.Status(ctx, req)
}
