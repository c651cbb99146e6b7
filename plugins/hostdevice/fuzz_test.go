package hostdevice

import (
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","type":"host-device","device":"eth1"}`))
	f.Add([]byte(`{"cniVersion":"1.0.0","hwaddr":"02:00:00:00:00:01","ipam":{"type":"static"}}`))
	f.Add([]byte(`{"cniVersion":"0.4.0","kernelpath":"/sys/devices/pci0000:00/0000:00:19.0"}`))
	f.Add([]byte(`{"cniVersion":"1.1.0","pciBusID":"0000:00:03.0","runtimeConfig":{"deviceID":"../../x"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parse(data)
		if err != nil {
			return
		}
		if c.Device == "" && c.HWAddr == "" && c.KernelPath == "" && c.PCIAddr == "" {
			t.Fatal("accepted a config without a selector")
		}
		if c.HWAddr != "" && c.hwaddr == nil {
			t.Fatal("hwaddr not parsed")
		}
		if strings.Contains(c.PCIAddr, "..") || strings.Contains(c.PCIAddr, "/") || strings.Contains(c.KernelPath, "..") {
			t.Fatalf("accepted a path escaping sysfs: %q %q", c.PCIAddr, c.KernelPath)
		}
		if c.KernelPath != "" && !strings.HasPrefix(c.KernelPath, "/sys/devices/") {
			t.Fatalf("accepted kernelpath %q", c.KernelPath)
		}
	})
}
