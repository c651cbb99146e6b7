// Package portmaptest sets up "N containers already mapped" quickly, for
// portmap's tests and benchmarks and for side-by-side runs against the
// reference plugin. The containers are synthetic: portmap never enters the
// container namespace, so a prevResult naming one is all it needs.
//
// Container i has address 10.128.0.0/9 + i + 2 on eth0 and maps host port
// BasePort+i/tcp to port 80.
package portmaptest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/knit-cni/knit/pkg/cni"
)

// BasePort is the host port of container 0.
const BasePort = 10000

// Max is how many synthetic containers there can be.
const Max = 65535 - BasePort

// ContainerID of synthetic container i.
func ContainerID(i int) string { return fmt.Sprintf("portmaptest%06d", i) }

// Addr of synthetic container i.
func Addr(i int) net.IP {
	n := uint32(10)<<24 | 1<<23 | uint32(i+2)
	return net.IPv4(byte(n>>24), byte(n>>16), byte(n>>8), byte(n)).To4()
}

// Result is the prevResult of container i: a bridge, a host veth and the
// container's eth0 with its address.
func Result(i int) *current.Result {
	return &current.Result{CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: "cni0"}, {Name: fmt.Sprintf("veth%06d", i)},
			{Name: "eth0", Sandbox: fmt.Sprintf("/var/run/netns/portmaptest-%d", i)}},
		IPs: []*current.IPConfig{{Interface: current.Int(2),
			Address: net.IPNet{IP: Addr(i), Mask: net.CIDRMask(9, 32)}, Gateway: net.IPv4(10, 128, 0, 1)}},
	}
}

// Config is container i's portmap config in version for network, with
// extra keys (e.g. "backend") merged in.
func Config(i int, version, network string, extra map[string]any) ([]byte, error) {
	prev, err := Result(i).GetAsVersion(version)
	if err != nil {
		return nil, err
	}
	m := map[string]any{
		"cniVersion": version, "name": network, "type": "portmap",
		"runtimeConfig": map[string]any{"portMappings": []map[string]any{
			{"hostPort": BasePort + i, "containerPort": 80, "protocol": "tcp"},
		}},
		"prevResult": prev,
	}
	for k, v := range extra {
		m[k] = v
	}
	return json.Marshal(m)
}

// Request is an ADD of container i.
func Request(i int, version, network string, extra map[string]any) (*cni.Request, error) {
	if i < 0 || i >= Max {
		return nil, fmt.Errorf("portmaptest: container %d out of range [0, %d)", i, Max)
	}
	conf, err := Config(i, version, network, extra)
	if err != nil {
		return nil, err
	}
	return &cni.Request{Command: cni.CmdAdd, ContainerID: ContainerID(i), IfName: "eth0",
		Netns: fmt.Sprintf("/var/run/netns/portmaptest-%d", i), Config: conf}, nil
}

// Runner runs one CNI request.
type Runner func(ctx context.Context, req *cni.Request) error

// InProcess runs requests with a knit plugin in this process.
func InProcess(p cni.Plugin) Runner {
	return func(ctx context.Context, req *cni.Request) error {
		_, err := cni.Call(ctx, p, req)
		return err
	}
}

// Exec runs requests with a plugin binary (knit's or the reference's)
// inside the network namespace at hostNS, through nsenter.
func Exec(bin, hostNS string) Runner {
	return func(ctx context.Context, req *cni.Request) error {
		cmd := exec.CommandContext(ctx, "nsenter", "--net="+hostNS, bin)
		cmd.Env = []string{"CNI_COMMAND=" + string(req.Command), "CNI_CONTAINERID=" + req.ContainerID,
			"CNI_NETNS=" + req.Netns, "CNI_IFNAME=" + req.IfName, "CNI_PATH=/nonexistent",
			"PATH=" + os.Getenv("PATH")}
		cmd.Stdin = bytes.NewReader(req.Config)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s %s %s: %w: %s", bin, req.Command, req.ContainerID, err, out.String())
		}
		return nil
	}
}

// Populate ADDs synthetic containers [from, to) with run.
func Populate(ctx context.Context, run Runner, from, to int, version, network string, extra map[string]any) error {
	for i := from; i < to; i++ {
		req, err := Request(i, version, network, extra)
		if err != nil {
			return err
		}
		if err := run(ctx, req); err != nil {
			return err
		}
	}
	return nil
}
