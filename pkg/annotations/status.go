package annotations

import (
	"encoding/json"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
)

// NetworkStatus is one element of the network-status annotation, with the
// keys of §5 of the standard: ips are addresses without prefix length,
// default is true only for the cluster network's interface, dns is always
// present (possibly empty, as Multus writes it).
type NetworkStatus struct {
	Name         string            `json:"name"`
	Interface    string            `json:"interface,omitempty"`
	IPs          []string          `json:"ips,omitempty"`
	Mac          string            `json:"mac,omitempty"`
	Default      bool              `json:"default,omitempty"`
	DNS          nadv1.DNS         `json:"dns"`
	DeviceInfo   *nadv1.DeviceInfo `json:"device-info,omitempty"`
	DefaultRoute []string          `json:"default-route,omitempty"`
}

// Statuses turns one attachment's result into network-status elements: one
// per interface the result puts in the sandbox (a plugin may create more
// than one), or a single element named ifName when the result lists none.
func Statuses(name, ifName string, res *current.Result, isDefault bool, dev *nadv1.DeviceInfo) []NetworkStatus {
	dns := nadv1.DNS{Nameservers: res.DNS.Nameservers, Domain: res.DNS.Domain,
		Search: res.DNS.Search, Options: res.DNS.Options}
	var out []NetworkStatus
	index := map[int]int{} // result interface index -> element
	for i, iface := range res.Interfaces {
		if iface.Sandbox == "" {
			continue
		}
		index[i] = len(out)
		out = append(out, NetworkStatus{Name: name, Interface: iface.Name, Mac: iface.Mac, DNS: dns, DeviceInfo: dev})
	}
	if len(out) == 0 {
		out = append(out, NetworkStatus{Name: name, Interface: ifName, DNS: dns, DeviceInfo: dev})
	}
	target := func(ipc *current.IPConfig) int {
		if ipc.Interface != nil {
			if e, ok := index[*ipc.Interface]; ok {
				return e
			}
		}
		// Addresses not tied to a sandbox interface belong to the
		// requested one, or to the last element (as Multus does).
		for e := range out {
			if out[e].Interface == ifName {
				return e
			}
		}
		return len(out) - 1
	}
	gwElem := -1
	for _, ipc := range res.IPs {
		e := target(ipc)
		out[e].IPs = append(out[e].IPs, ipc.Address.IP.String())
		if ipc.Gateway != nil && gwElem < 0 {
			gwElem = e
		}
	}
	for _, r := range res.Routes {
		if gw := defaultRouteGW(r, res); gw != nil {
			e := routeElem(r, res, target)
			out[e].DefaultRoute = append(out[e].DefaultRoute, gw.String())
		}
	}
	if isDefault {
		if gwElem < 0 {
			gwElem = 0
		}
		out[gwElem].Default = true
	}
	return out
}

// defaultRouteGW returns the gateway of a default route (0.0.0.0/0 or ::/0,
// or no destination), falling back to the gateway of the result's first
// address of the same family when the route has none; nil otherwise.
func defaultRouteGW(r *types.Route, res *current.Result) net.IP {
	if r == nil {
		return nil
	}
	if r.Dst.IP != nil {
		if ones, _ := r.Dst.Mask.Size(); ones != 0 || !(r.Dst.IP.IsUnspecified()) {
			return nil
		}
	}
	if r.GW != nil {
		return r.GW
	}
	v4 := r.Dst.IP == nil || r.Dst.IP.To4() != nil
	for _, ipc := range res.IPs {
		if ipc.Gateway != nil && (ipc.Gateway.To4() != nil) == v4 {
			return ipc.Gateway
		}
	}
	return nil
}

// routeElem picks the element a default route belongs to: the interface of
// the address whose subnet holds the gateway, else the first element.
func routeElem(r *types.Route, res *current.Result, target func(*current.IPConfig) int) int {
	gw := r.GW
	for _, ipc := range res.IPs {
		if gw != nil && ipc.Address.Contains(gw) {
			return target(ipc)
		}
	}
	return 0
}

// MarshalStatus encodes the network-status annotation value.
func MarshalStatus(s []NetworkStatus) (string, error) {
	if s == nil {
		s = []NetworkStatus{}
	}
	b, err := json.Marshal(s)
	return string(b), err
}
