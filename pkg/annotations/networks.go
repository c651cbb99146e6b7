// Package annotations parses the pod and NetworkAttachmentDefinition
// annotations of the Kubernetes Network Custom Resource Definition De-facto
// Standard (v1.3) and builds the network-status annotation.
//
// Parsing is strict where the standard says MUST (duplicate or bad interface
// names, more than one default-route, ips together with an IPAM claim) and
// every error names the annotation and the element's field, so that the pod
// event and the CNI error tell the user exactly what to fix.
package annotations

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
)

// Annotation keys.
const (
	// NetworksKey is the pod annotation selecting additional networks.
	NetworksKey = nadv1.NetworkAttachmentAnnot
	// NetworkStatusKey is the pod annotation knit writes after ADD.
	NetworkStatusKey = nadv1.NetworkStatusAnnot
	// DefaultNetworkKey replaces the cluster network for one pod (Multus key).
	DefaultNetworkKey = "v1.multus-cni.io/default-network"
	// ResourceNameKey on a NAD names the device-plugin resource whose device
	// is passed to the attachment as runtimeConfig deviceID.
	ResourceNameKey = "k8s.v1.cni.cncf.io/resourceName"
)

// Selection is one element of a networks annotation, namespace resolved.
type Selection struct {
	nadv1.NetworkSelectionElement
	// Field names the element in errors, e.g.
	// `k8s.v1.cni.cncf.io/networks[1]`.
	Field string
}

// Key is the NAD reference as "namespace/name".
func (s *Selection) Key() string { return s.Namespace + "/" + s.Name }

// FieldError is an invalid annotation value. Field is the path of the
// offending value (annotation key, element index, JSON key).
type FieldError struct {
	Field string
	Msg   string
	// Decode is true when the value could not be decoded at all (CNI code
	// 6 rather than 7).
	Decode bool
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

func fieldErr(field, format string, a ...any) *FieldError {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, a...)}
}

// dns1123Label is the format of namespace and NAD names in the comma form.
var dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// ValidName reports whether s is a DNS-1123 label (at most 63 characters).
func ValidName(s string) bool { return len(s) <= 63 && dns1123Label.MatchString(s) }

// isJSON reports whether an annotation value is the JSON form: the standard
// says a value containing `[`, `{` or `"` is JSON.
func isJSON(v string) bool { return strings.ContainsAny(v, "[{\"") }

// ParseNetworks parses the value of the networks annotation (key names the
// annotation in errors) for a pod in podNamespace. An empty value selects
// nothing.
func ParseNetworks(key, value, podNamespace string) ([]*Selection, error) {
	if strings.TrimSpace(value) == "" {
		return nil, nil
	}
	var sels []*Selection
	var err error
	if isJSON(value) {
		sels, err = parseJSON(key, value)
	} else {
		sels, err = parseCommaList(key, value)
	}
	if err != nil {
		return nil, err
	}
	for _, s := range sels {
		if s.Namespace == "" {
			s.Namespace = podNamespace
		}
		if err := validate(s); err != nil {
			return nil, err
		}
	}
	if err := checkDefaultRoutes(key, sels); err != nil {
		return nil, err
	}
	return sels, nil
}

func parseCommaList(key, value string) ([]*Selection, error) {
	var sels []*Selection
	for i, item := range strings.Split(value, ",") {
		field := fmt.Sprintf("%s[%d]", key, i)
		ns, name, ifname, err := parseItem(field, strings.TrimSpace(item))
		if err != nil {
			return nil, err
		}
		sels = append(sels, &Selection{Field: field, NetworkSelectionElement: nadv1.NetworkSelectionElement{
			Name: name, Namespace: ns, InterfaceRequest: ifname}})
	}
	return sels, nil
}

// parseItem splits `[namespace/]name[@ifname]`.
func parseItem(field, item string) (ns, name, ifname string, err error) {
	if item == "" {
		return "", "", "", fieldErr(field, "empty network name")
	}
	rest := item
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		ns, rest = strings.TrimSpace(rest[:i]), rest[i+1:]
		if strings.Contains(rest, "/") {
			return "", "", "", fieldErr(field, "%q: more than one '/' (want [namespace/]name[@interface])", item)
		}
		if ns == "" {
			return "", "", "", fieldErr(field+".namespace", "empty namespace in %q", item)
		}
	}
	name = rest
	if i := strings.IndexByte(rest, '@'); i >= 0 {
		name, ifname = strings.TrimSpace(rest[:i]), strings.TrimSpace(rest[i+1:])
		if strings.Contains(ifname, "@") {
			return "", "", "", fieldErr(field, "%q: more than one '@' (want [namespace/]name[@interface])", item)
		}
		if ifname == "" {
			return "", "", "", fieldErr(field+".interface", "empty interface name in %q", item)
		}
	}
	return ns, strings.TrimSpace(name), ifname, nil
}

func parseJSON(key, value string) ([]*Selection, error) {
	var raw []json.RawMessage
	if err := json.Unmarshal([]byte(value), &raw); err != nil {
		return nil, &FieldError{Field: key, Decode: true,
			Msg: "JSON form must be a list of network selection objects: " + jsonMsg(err)}
	}
	sels := make([]*Selection, 0, len(raw))
	for i, r := range raw {
		field := fmt.Sprintf("%s[%d]", key, i)
		s := &Selection{Field: field}
		if err := json.Unmarshal(r, &s.NetworkSelectionElement); err != nil {
			return nil, elementDecodeError(field, err)
		}
		sels = append(sels, s)
	}
	return sels, nil
}

// elementDecodeError names the JSON key that failed to decode.
func elementDecodeError(field string, err error) *FieldError {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return &FieldError{Field: field + "." + te.Field, Decode: true,
			Msg: fmt.Sprintf("cannot decode JSON %s into %s", te.Value, te.Type)}
	}
	var pe *net.ParseError
	if errors.As(err, &pe) {
		// net.IP's decoder only runs for default-route in this type.
		return &FieldError{Field: field + ".default-route", Decode: true, Msg: fmt.Sprintf("invalid IP address %q", pe.Text)}
	}
	return &FieldError{Field: field, Decode: true, Msg: jsonMsg(err)}
}

func jsonMsg(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("malformed JSON at offset %d: %v", se.Offset, se)
	}
	return err.Error()
}

// validate checks one element's values.
func validate(s *Selection) error {
	f := s.Field
	if s.Name == "" {
		return fieldErr(f+".name", "missing network name")
	}
	if !ValidName(s.Name) {
		return fieldErr(f+".name", "%q is not a valid NetworkAttachmentDefinition name (DNS-1123 label)", s.Name)
	}
	if !ValidName(s.Namespace) {
		return fieldErr(f+".namespace", "%q is not a valid namespace name (DNS-1123 label)", s.Namespace)
	}
	if s.InterfaceRequest != "" {
		if err := ValidIfName(s.InterfaceRequest); err != nil {
			return fieldErr(f+".interface", "%v", err)
		}
	}
	if s.MacRequest != "" {
		if hw, err := net.ParseMAC(s.MacRequest); err != nil || len(hw) != 6 {
			return fieldErr(f+".mac", "%q is not an Ethernet MAC address", s.MacRequest)
		}
	}
	if s.InfinibandGUIDRequest != "" {
		if _, err := net.ParseMAC(s.InfinibandGUIDRequest); err != nil {
			return fieldErr(f+".infiniband-guid", "%q is not a GUID", s.InfinibandGUIDRequest)
		}
	}
	if len(s.IPRequest) > 0 && s.IPAMClaimReference != "" {
		return fieldErr(f+".ips", "must not be set together with ipam-claim-reference")
	}
	for i, ip := range s.IPRequest {
		if !validIP(ip) {
			return fieldErr(fmt.Sprintf("%s.ips[%d]", f, i), "%q is not an IP address or CIDR", ip)
		}
	}
	for i, pm := range s.PortMappingsRequest {
		if err := validPortMapping(pm); err != nil {
			return fieldErr(fmt.Sprintf("%s.portMappings[%d]", f, i), "%v", err)
		}
	}
	if b := s.BandwidthRequest; b != nil && (b.IngressRate < 0 || b.IngressBurst < 0 || b.EgressRate < 0 || b.EgressBurst < 0) {
		return fieldErr(f+".bandwidth", "rates and bursts must not be negative")
	}
	for i, gw := range s.GatewayRequest {
		if gw == nil {
			return fieldErr(fmt.Sprintf("%s.default-route[%d]", f, i), "empty gateway")
		}
	}
	return nil
}

func validIP(s string) bool {
	if strings.Contains(s, "/") {
		_, _, err := net.ParseCIDR(s)
		return err == nil
	}
	return net.ParseIP(s) != nil
}

func validPortMapping(pm *nadv1.PortMapEntry) error {
	if pm == nil {
		return errors.New("empty port mapping")
	}
	if pm.ContainerPort < 1 || pm.ContainerPort > 65535 {
		return fmt.Errorf("containerPort %d out of range 1-65535", pm.ContainerPort)
	}
	if pm.HostPort < 0 || pm.HostPort > 65535 {
		return fmt.Errorf("hostPort %d out of range 0-65535", pm.HostPort)
	}
	switch strings.ToLower(pm.Protocol) {
	case "", "tcp", "udp", "sctp":
	default:
		return fmt.Errorf("protocol %q is not tcp, udp or sctp", pm.Protocol)
	}
	if pm.HostIP != "" && net.ParseIP(pm.HostIP) == nil {
		return fmt.Errorf("hostIP %q is not an IP address", pm.HostIP)
	}
	return nil
}

// checkDefaultRoutes enforces the standard's "only one element may request
// the default route".
func checkDefaultRoutes(key string, sels []*Selection) error {
	first := -1
	for i, s := range sels {
		if len(s.GatewayRequest) == 0 {
			continue
		}
		if first >= 0 {
			return fieldErr(s.Field+".default-route", "only one network may set default-route (%s[%d] already does)", key, first)
		}
		first = i
	}
	return nil
}

// ValidIfName applies the CNI spec's interface name rules: at most 15
// characters, not "." or "..", no '/', ':' or whitespace.
func ValidIfName(name string) error {
	switch {
	case name == "":
		return errors.New("empty interface name")
	case len(name) > 15:
		return fmt.Errorf("interface name %q is longer than 15 characters", name)
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q is not allowed", name)
	case strings.ContainsAny(name, "/: \t\n\v\f\r"):
		return fmt.Errorf("interface name %q contains '/', ':' or whitespace", name)
	}
	return nil
}

// ParseDefaultNetwork parses the v1.multus-cni.io/default-network annotation:
// exactly one network, in either form, whose namespace defaults to
// defaultNamespace (the namespace cluster networks live in).
func ParseDefaultNetwork(value, defaultNamespace string) (*Selection, error) {
	sels, err := ParseNetworks(DefaultNetworkKey, value, defaultNamespace)
	if err != nil {
		return nil, err
	}
	switch {
	case len(sels) == 0:
		return nil, nil
	case len(sels) > 1:
		return nil, fieldErr(DefaultNetworkKey, "names %d networks; a pod has exactly one cluster network", len(sels))
	}
	return sels[0], nil
}
