package hostdevice

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/nlsafe"
)

// userspaceDriver reports whether a PCI driver binds its device for DPDK:
// such a device has no netdev to move.
func userspaceDriver(name string) bool {
	switch name {
	case "vfio-pci", "uio_pci_generic", "igb_uio":
		return true
	}
	return false
}

// find returns the host link the config selects, or nil for a PCI device
// bound to a user-space driver. Selectors are tried in the reference's
// order: device, hwaddr, kernelpath, pciBusID. Not finding the device is a
// config error naming the selector.
func (p Plugin) find(h *netlink.Handle, c *Config) (netlink.Link, error) {
	switch {
	case c.Device != "":
		l, err := h.LinkByName(c.Device)
		if err != nil {
			return nil, notFound("device", err, "link %q not found", c.Device)
		}
		return l, nil
	case c.hwaddr != nil:
		return byMAC(h, c)
	case c.KernelPath != "":
		dir := filepath.Join(p.sysRoot(), strings.TrimPrefix(c.KernelPath, "/sys"), "net")
		return firstNetdev(h, "kernelpath", dir)
	}
	return p.byPCI(h, c.PCIAddr)
}

func notFound(field string, err error, format string, a ...any) error {
	var nf netlink.LinkNotFoundError
	if err == nil || errors.As(err, &nf) || errors.Is(err, os.ErrNotExist) {
		return cni.ConfigError(field, format, a...)
	}
	return fmt.Errorf("%s: %s: %w", field, fmt.Sprintf(format, a...), err)
}

func byMAC(h *netlink.Handle, c *Config) (netlink.Link, error) {
	links, err := nlsafe.LinkList(h)
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	for _, l := range links {
		if bytes.Equal(l.Attrs().HardwareAddr, c.hwaddr) {
			return l, nil
		}
	}
	return nil, cni.ConfigError("hwaddr", "no link with MAC %s", c.hwaddr)
}

// firstNetdev returns the first entry of a sysfs net/ directory that is a
// link in the host namespace.
func firstNetdev(h *netlink.Handle, field, dir string) (netlink.Link, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, notFound(field, err, "no network devices at %s", dir)
	}
	for _, e := range entries {
		if l, err := h.LinkByName(e.Name()); err == nil {
			return l, nil
		}
	}
	return nil, cni.ConfigError(field, "none of the network devices at %s is in the host namespace", dir)
}

// byPCI finds the netdev of a PCI device: under net/, or for virtio under
// virtio*/net/. A device bound to a user-space driver yields nil.
func (p Plugin) byPCI(h *netlink.Handle, addr string) (netlink.Link, error) {
	dev := filepath.Join(p.sysRoot(), "bus/pci/devices", addr)
	if drv, err := filepath.EvalSymlinks(filepath.Join(dev, "driver")); err == nil && userspaceDriver(filepath.Base(drv)) {
		return nil, nil
	}
	netDir := filepath.Join(dev, "net")
	if _, err := os.Lstat(netDir); err != nil {
		matches, _ := filepath.Glob(filepath.Join(dev, "virtio*", "net"))
		if len(matches) == 0 {
			return nil, cni.ConfigError("pciBusID", "no network device under PCI device %s", addr)
		}
		netDir = matches[0]
	}
	return firstNetdev(h, "pciBusID", netDir)
}
