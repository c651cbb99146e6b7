// Package bridge is the CNI bridge plugin: containers get a veth pair whose
// host end is a port of a Linux bridge in the host namespace, optionally
// with the bridge as their gateway, masquerading, VLANs and MAC spoof
// checking. Config keys, result (interfaces [bridge, host veth, container],
// IPs on index 2) and kernel state follow the reference
// (containernetworking/plugins bridge). Where knit differs:
//
//   - no waits: the host veth is not polled for oper-up, and the
//     container's IPv6 addresses are added with IFA_F_NODAD (accept_dad=0
//     as the reference sets it) unless enabledad;
//   - a failed ADD undoes everything but the bridge (the reference leaves
//     the host veth on the bridge when IPAM fails);
//   - ipMasq uses nftables (package masq, table inet knit_masq) whatever
//     ipMasqBackend says: "iptables" is accepted so that configs written for
//     the reference keep working, other values are rejected; rules are
//     tagged by attachment, so DEL removes them even when the namespace is
//     gone and GC removes those of attachments no longer valid;
//   - macspoofchk uses one rule per attachment in the bridge table
//     knit_macspoofchk (package spoofchk) instead of the reference's chains
//     in table bridge nat; same filtering;
//   - a bridge whose ports all left has MAC 00:00:…, which the reference
//     fails to pin when it adds the gateway address; knit pins the current
//     MAC then;
//   - GC is implemented (rules above, then the IPAM plugin's GC).
package bridge

import (
	"context"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/ipam"
	"github.com/knit-cni/knit/pkg/spoofchk"
	"github.com/knit-cni/knit/pkg/vethnet"
)

// Plugin implements cni.Plugin and cni.GarbageCollector. It acts on the
// network namespace it runs in as the host side.
type Plugin struct{}

// attach is one ADD in progress.
type attach struct {
	*vethnet.Attach
	conf     *Config
	br       *netlink.Bridge
	hostVeth netlink.Link
	contLink netlink.Link
	res      *current.Result
}

// Add creates (or reuses) the bridge and plugs the container into it. A
// failure undoes everything but the bridge.
func (Plugin) Add(ctx context.Context, req *cni.Request) (types.Result, error) {
	conf, err := parse(req.Config, req.Args)
	if err != nil {
		return nil, err
	}
	prev, err := conf.PrevResult()
	if err != nil {
		return nil, err
	}
	va, err := vethnet.Open(req, conf.Name)
	if err != nil {
		return nil, err
	}
	defer va.Close()
	a := &attach{Attach: va, conf: conf}
	res, err := a.add(ctx)
	if err != nil {
		a.Rollback()
		return nil, err
	}
	return vethnet.Merge(prev, res), nil
}

func (a *attach) add(ctx context.Context) (*current.Result, error) {
	var err error
	if a.br, err = ensureBridge(a.Host, a.conf); err != nil {
		return nil, err
	}
	if a.hostVeth, a.contLink, err = a.AddVeth(a.conf.MTU, a.conf.mac, a.br.Index); err != nil {
		return nil, err
	}
	if err := setupPort(a.Host, a.hostVeth, a.conf); err != nil {
		return nil, err
	}
	a.res = &current.Result{CNIVersion: current.ImplementedSpecVersion, Interfaces: []*current.Interface{
		{Name: a.br.Name},
		{Name: a.hostVeth.Attrs().Name, Mac: a.hostVeth.Attrs().HardwareAddr.String()},
		{Name: a.Req.IfName, Mac: a.contLink.Attrs().HardwareAddr.String(), Sandbox: a.Req.Netns},
	}}
	if a.conf.MacSpoofChk {
		if err := a.spoofCheck(ctx); err != nil {
			return nil, err
		}
	}
	if err := a.configure(ctx); err != nil {
		return nil, err
	}
	return a.finish()
}

func (a *attach) spoofCheck(ctx context.Context) error {
	c, err := a.NFT()
	if err != nil {
		return err
	}
	if err := spoofchk.Setup(ctx, c, a.Owner, a.hostVeth.Attrs().Name, a.contLink.Attrs().HardwareAddr); err != nil {
		return err
	}
	a.OnFail(func() { _ = spoofchk.Teardown(context.Background(), c, a.Owner) })
	return nil
}

// configure gives the container its IPAM addresses (layer 3) or just sets
// its interface up (layer 2, unless disabled).
func (a *attach) configure(ctx context.Context) error {
	if a.conf.ipamType == "" {
		if a.conf.DisableContainerIf {
			return nil
		}
		if err := a.Cont.NL.LinkSetUp(a.contLink); err != nil {
			return fmt.Errorf("setting %s up: %w", a.Req.IfName, err)
		}
		return nil
	}
	ipres, err := a.IPAM(ctx, a.conf.ipamType)
	if err != nil {
		return err
	}
	a.res.IPs, a.res.Routes, a.res.DNS = ipres.IPs, ipres.Routes, ipres.DNS
	gws, err := calcGateways(a.res, a.conf)
	if err != nil {
		return err
	}
	if err := a.configureContainer(); err != nil {
		return err
	}
	if a.conf.IsGateway {
		if err := a.setupGateway(gws); err != nil {
			return err
		}
	}
	if a.conf.IPMasq {
		return a.Masquerade(ctx, a.res.IPs)
	}
	return nil
}

// configureContainer sets the interface's sysctls (the one step that needs
// a thread inside the container's namespace), then addresses, link up and
// routes through the netlink handle.
func (a *attach) configureContainer() error {
	ifName, dad := a.Req.IfName, a.conf.EnableDad
	err := a.Cont.Do(func() error { return containerSysctls(ifName, dad) })
	if err != nil {
		return err
	}
	return ipam.ConfigureLink(a.Cont.NL, a.contLink, a.res, dad)
}

// finish reads back the bridge, whose MAC may have changed when its first
// port joined, and applies the config's DNS.
func (a *attach) finish() (*current.Result, error) {
	br, err := a.Host.LinkByIndex(a.br.Index)
	if err != nil {
		return nil, fmt.Errorf("looking up bridge %s: %w", a.conf.Bridge, err)
	}
	a.res.Interfaces[0].Mac = br.Attrs().HardwareAddr.String()
	if vethnet.DNSSet(a.conf.DNS) {
		a.res.DNS = a.conf.DNS
	}
	return a.res, nil
}
