package knitd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/knit-cni/knit/pkg/annotations"
	"github.com/knit-cni/knit/pkg/attachcache"
	"github.com/knit-cni/knit/pkg/chain"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/confgen"
	"github.com/knit-cni/knit/pkg/nad"
	"github.com/knit-cni/knit/pkg/podresources"
	"github.com/knit-cni/knit/pkg/shim"
)

// Event reasons knitd reports on pods.
const (
	ReasonAddedInterface    = "AddedInterface"
	ReasonNoNetworkFound    = "NoNetworkFound"
	ReasonInvalidAnnotation = "InvalidNetworkAnnotation"
	ReasonInvalidNetwork    = "InvalidNetworkConfig"
	ReasonAttachFailed      = "NetworkAttachFailed"
)

// podError is an ADD failure caused by the pod's annotations or a NAD it
// references: it becomes a Warning event on the pod as well as the CNI
// error.
type podError struct {
	Reason string
	Err    error
}

func (e *podError) Error() string { return e.Err.Error() }
func (e *podError) Unwrap() error { return e.Err }

func annotationError(err error) error {
	var fe *annotations.FieldError
	if errors.As(err, &fe) {
		code := uint(types.ErrInvalidNetworkConfig)
		if fe.Decode {
			code = types.ErrDecodingFailure
		}
		return &podError{Reason: ReasonInvalidAnnotation, Err: &cni.Error{Code: code, Msg: fe.Error(), Err: fe}}
	}
	return &podError{Reason: ReasonInvalidAnnotation, Err: err}
}

// planner resolves one pod's attachments.
type planner struct {
	d     *Daemon
	pod   *corev1.Pod // nil outside Kubernetes (no K8S_POD_* args)
	conf  *shim.Conf
	req   *cni.Request
	alloc *podresources.Allocator // device IDs, fetched on first need
}

// plan lists the attachments of an ADD in order: the cluster network (or
// the pod's default-network override), the configured default networks,
// then the networks annotation. Interface names are assigned and checked.
func (p *planner) plan(ctx context.Context) ([]attachcache.Attachment, error) {
	cluster, err := p.clusterAttachment()
	if err != nil {
		return nil, err
	}
	atts := []attachcache.Attachment{cluster}
	if p.pod == nil {
		return atts, nil
	}
	fields := []string{""} // the annotation field behind each attachment, for errors
	if !contains(p.d.cfg.SystemNamespaces, p.pod.Namespace) {
		for _, name := range p.d.cfg.DefaultNetworks {
			a, err := p.defaultNetwork(ctx, name)
			if err != nil {
				return nil, err
			}
			atts = append(atts, a)
			fields = append(fields, "defaultNetworks")
		}
	}
	sels, err := annotations.ParseNetworks(annotations.NetworksKey, p.pod.Annotations[annotations.NetworksKey], p.pod.Namespace)
	if err != nil {
		return nil, annotationError(err)
	}
	for _, sel := range sels {
		a, err := p.selection(ctx, sel)
		if err != nil {
			return nil, err
		}
		atts = append(atts, a)
		fields = append(fields, sel.Field)
	}
	return atts, assignInterfaces(atts, fields)
}

// assignInterfaces names unnamed secondary interfaces net<N>, N being the
// attachment's position (the cluster network is 0), and rejects duplicates.
func assignInterfaces(atts []attachcache.Attachment, fields []string) error {
	seen := map[string]int{}
	for i := range atts {
		if atts[i].IfName == "" {
			atts[i].IfName = fmt.Sprintf("net%d", i)
		}
		if j, dup := seen[atts[i].IfName]; dup {
			field := fields[i]
			if field == "" || field == "defaultNetworks" {
				field = annotations.NetworksKey
			} else {
				field += ".interface"
			}
			return annotationError(&annotations.FieldError{Field: field,
				Msg: fmt.Sprintf("interface name %q is already used by network %s", atts[i].IfName, atts[j].Network)})
		}
		seen[atts[i].IfName] = i
	}
	return nil
}

// clusterAttachment resolves the pod's cluster network: the
// v1.multus-cni.io/default-network annotation, else the clusterNetwork
// option, else the conf dir's cluster network config.
func (p *planner) clusterAttachment() (attachcache.Attachment, error) {
	var name string
	var n *chain.Network
	var err error
	if p.pod != nil && p.pod.Annotations[annotations.DefaultNetworkKey] != "" {
		name, n, err = p.defaultNetworkOverride()
	} else {
		name, n, err = p.d.resolveNamed(p.d.cfg.ClusterNetwork, p.conf.CNIVersion)
	}
	if err != nil {
		return attachcache.Attachment{}, err
	}
	cfg, err := n.Marshal()
	if err != nil {
		return attachcache.Attachment{}, err
	}
	// Kubelet's runtimeConfig (portMappings, bandwidth, ...) is for the
	// cluster network only (standard §7.5).
	return attachcache.Attachment{Network: name, IfName: p.req.IfName, Default: true, Config: cfg,
		RuntimeConfig: p.conf.RuntimeConfig}, nil
}

func (p *planner) defaultNetworkOverride() (string, *chain.Network, error) {
	sel, err := annotations.ParseDefaultNetwork(p.pod.Annotations[annotations.DefaultNetworkKey], p.d.cfg.MultusNamespace)
	if err != nil {
		return "", nil, annotationError(err)
	}
	def, err := p.lookupNAD(annotations.DefaultNetworkKey, sel.Namespace, sel.Name)
	if err != nil {
		return "", nil, err
	}
	n, err := nad.Network(def, p.d.cfg.ConfDir, p.conf.CNIVersion)
	if err != nil {
		return "", nil, &podError{Reason: ReasonInvalidNetwork, Err: err}
	}
	return sel.Key(), n, nil
}

// resolveNamed finds a network named in knitd's config (clusterNetwork,
// defaultNetworks) the way Multus does: a NAD in multusNamespace, else a
// config file in the conf dir with that name; a name with a '/' is a file
// or directory path. Empty means the conf dir's cluster network.
func (d *Daemon) resolveNamed(name, defVersion string) (string, *chain.Network, error) {
	if name == "" {
		src := d.source.Load()
		if src == nil {
			return "", nil, cni.Errorf(types.ErrTryAgainLater, "no cluster network: no CNI config in %s other than %s", d.cfg.ConfDir, confgen.FileName)
		}
		return src.Network.Name, src.Network, nil
	}
	if strings.Contains(name, "/") {
		return resolvePath(name)
	}
	if def, err := d.kube.getNAD(d.cfg.MultusNamespace, name); err == nil {
		n, err := nad.Network(def, d.cfg.ConfDir, defVersion)
		if err != nil {
			return "", nil, err
		}
		return d.cfg.MultusNamespace + "/" + name, n, nil
	}
	b, path, err := nad.FileByName(d.cfg.ConfDir, name, confgen.FileName)
	if err != nil {
		return "", nil, cni.Errorf(types.ErrTryAgainLater, "network %q: no NetworkAttachmentDefinition %s/%s and %v", name, d.cfg.MultusNamespace, name, err)
	}
	n, err := chain.Parse(b)
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", path, err)
	}
	return n.Name, n, nil
}

func resolvePath(path string) (string, *chain.Network, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", nil, cni.Errorf(types.ErrTryAgainLater, "network %s: %v", path, err)
	}
	if st.IsDir() {
		src, _, err := confgen.Find(path)
		if err != nil {
			return "", nil, err
		}
		if src == nil {
			return "", nil, cni.Errorf(types.ErrTryAgainLater, "network %s: no usable CNI config in the directory", path)
		}
		return src.Network.Name, src.Network, nil
	}
	n, err := nad.LoadFile(path)
	if err != nil {
		return "", nil, err
	}
	return n.Name, n, nil
}

// defaultNetwork resolves one of the configured defaultNetworks.
func (p *planner) defaultNetwork(ctx context.Context, name string) (attachcache.Attachment, error) {
	if !strings.Contains(name, "/") {
		if def, err := p.d.kube.getNAD(p.d.cfg.MultusNamespace, name); err == nil {
			sel := &annotations.Selection{Field: "defaultNetworks"}
			sel.Name, sel.Namespace = name, p.d.cfg.MultusNamespace
			return p.nadAttachment(ctx, sel, def)
		}
	}
	key, n, err := p.d.resolveNamed(name, p.conf.CNIVersion)
	if err != nil {
		return attachcache.Attachment{}, err
	}
	cfg, err := n.Marshal()
	if err != nil {
		return attachcache.Attachment{}, err
	}
	return attachcache.Attachment{Network: key, Config: cfg}, nil
}

// selection resolves one element of the networks annotation.
func (p *planner) selection(ctx context.Context, sel *annotations.Selection) (attachcache.Attachment, error) {
	if err := p.checkIsolation(sel); err != nil {
		return attachcache.Attachment{}, err
	}
	def, err := p.lookupNAD(sel.Field, sel.Namespace, sel.Name)
	if err != nil {
		return attachcache.Attachment{}, err
	}
	return p.nadAttachment(ctx, sel, def)
}

func (p *planner) checkIsolation(sel *annotations.Selection) error {
	cfg := p.d.cfg
	if !cfg.NamespaceIsolation || sel.Namespace == p.pod.Namespace || contains(cfg.GlobalNamespaces, sel.Namespace) {
		return nil
	}
	return annotationError(&annotations.FieldError{Field: sel.Field + ".namespace",
		Msg: fmt.Sprintf("namespace isolation: a pod in namespace %s may not use networks of namespace %s", p.pod.Namespace, sel.Namespace)})
}

func (p *planner) lookupNAD(field, namespace, name string) (*nadv1.NetworkAttachmentDefinition, error) {
	def, err := p.d.kube.getNAD(namespace, name)
	if apierrors.IsNotFound(err) && !p.d.kube.nadInformer.HasSynced() {
		// Right after a knitd start: the NAD may simply not be cached yet.
		return nil, cni.Errorf(types.ErrTryAgainLater, "%s: NetworkAttachmentDefinition %s/%s: NAD cache not synced yet", field, namespace, name)
	}
	if apierrors.IsNotFound(err) {
		return nil, &podError{Reason: ReasonNoNetworkFound, Err: cni.Errorf(types.ErrInvalidNetworkConfig,
			"%s: NetworkAttachmentDefinition %s/%s not found", field, namespace, name)}
	}
	if err != nil {
		return nil, cni.Errorf(types.ErrTryAgainLater, "%s: NetworkAttachmentDefinition %s/%s: %v", field, namespace, name, err)
	}
	return def, nil
}

// capability maps each runtime request of a selection to the capability a
// NAD's plugin must declare for it (standard §4.1.2.1).
type capRequest struct {
	field, capability string
	set               bool
	value             any
}

func requests(sel *annotations.Selection) []capRequest {
	s := &sel.NetworkSelectionElement
	var bw any
	if s.BandwidthRequest != nil {
		bw = s.BandwidthRequest
	}
	return []capRequest{
		{"ips", "ips", len(s.IPRequest) > 0, s.IPRequest},
		{"mac", "mac", s.MacRequest != "", s.MacRequest},
		{"portMappings", "portMappings", len(s.PortMappingsRequest) > 0, s.PortMappingsRequest},
		{"bandwidth", "bandwidth", s.BandwidthRequest != nil, bw},
		{"infiniband-guid", "infinibandGUID", s.InfinibandGUIDRequest != "", s.InfinibandGUIDRequest},
	}
}

// nadAttachment builds the attachment of a NAD for a selection: its
// config with name and version, the runtimeConfig the selection asks for
// (only if a plugin declares the capability, else an error naming the
// field), cni-args, and the device of the NAD's resource.
func (p *planner) nadAttachment(ctx context.Context, sel *annotations.Selection, def *nadv1.NetworkAttachmentDefinition) (attachcache.Attachment, error) {
	ref := sel.Key()
	n, err := nad.Network(def, p.d.cfg.ConfDir, p.conf.CNIVersion)
	if err != nil {
		return attachcache.Attachment{}, &podError{Reason: ReasonInvalidNetwork, Err: err}
	}
	rc := map[string]any{}
	for _, r := range requests(sel) {
		if !r.set {
			continue
		}
		if !n.HasCapability(r.capability) {
			return attachcache.Attachment{}, annotationError(&annotations.FieldError{Field: sel.Field + "." + r.field,
				Msg: fmt.Sprintf("network %s has no plugin with the %q capability", ref, r.capability)})
		}
		rc[r.capability] = r.value
	}
	if sel.CNIArgs != nil {
		if err := n.MergeCNIArgs(*sel.CNIArgs); err != nil {
			return attachcache.Attachment{}, &podError{Reason: ReasonInvalidNetwork, Err: fmt.Errorf("network %s: %w", ref, err)}
		}
	}
	a := attachcache.Attachment{Network: ref, IfName: sel.InterfaceRequest, ResourceName: nad.ResourceName(def)}
	if a.ResourceName != "" {
		if a.DeviceID, err = p.device(ctx, a.ResourceName); err != nil {
			return attachcache.Attachment{}, err
		}
		if a.DeviceID != "" {
			rc["deviceID"] = a.DeviceID
			// Multus also puts it in the plugin config (sriov-cni reads it there).
			if err := n.SetPluginKey("deviceID", a.DeviceID); err != nil {
				return attachcache.Attachment{}, err
			}
		}
	}
	for _, gw := range sel.GatewayRequest {
		a.GatewayRequest = append(a.GatewayRequest, gw.String())
	}
	if len(rc) > 0 {
		a.RuntimeConfig = rc
	}
	if a.Config, err = n.Marshal(); err != nil {
		return attachcache.Attachment{}, err
	}
	return a, nil
}

// device takes the next device of a resource allocated to the pod, asking
// the kubelet once per ADD.
func (p *planner) device(ctx context.Context, resource string) (string, error) {
	if p.alloc == nil {
		c := &podresources.Client{Socket: p.d.cfg.PodResourcesSocket}
		devs, err := c.DeviceIDs(ctx, p.pod.Namespace, p.pod.Name)
		if err != nil {
			return "", cni.Errorf(types.ErrTryAgainLater, "resource %s: %v", resource, err)
		}
		p.alloc = podresources.NewAllocator(devs)
	}
	id := p.alloc.Next(resource)
	if id == "" {
		p.d.log.Warn("no device of resource allocated to pod", "resource", resource,
			"pod", p.pod.Namespace+"/"+p.pod.Name)
	}
	return id, nil
}

// gatewayIPs parses an attachment's recorded default-route request.
func gatewayIPs(a *attachcache.Attachment) []net.IP {
	var out []net.IP
	for _, s := range a.GatewayRequest {
		if ip := net.ParseIP(s); ip != nil {
			out = append(out, ip)
		}
	}
	return out
}
