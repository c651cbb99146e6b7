// Package podresources asks the kubelet which device-plugin devices a pod
// was given (the pod-resources API on the kubelet's unix socket), so that a
// NAD annotated with k8s.v1.cni.cncf.io/resourceName gets its device as
// runtimeConfig deviceID, as Multus does.
package podresources

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// DefaultSocket is the kubelet's pod-resources socket.
const DefaultSocket = "/var/lib/kubelet/pod-resources/kubelet.sock"

// Client queries one kubelet socket. It dials per query: the lookup is
// needed only for pods on networks backed by device plugins.
type Client struct {
	Socket  string
	Timeout time.Duration
}

// DeviceIDs returns the device IDs allocated to the pod's containers, per
// resource name, in the kubelet's order (containers in order, devices in
// allocation order).
func (c *Client) DeviceIDs(ctx context.Context, namespace, name string) (map[string][]string, error) {
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+c.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("kubelet pod-resources %s: %w", c.Socket, err)
	}
	defer conn.Close()
	resp, err := podresourcesv1.NewPodResourcesListerClient(conn).List(ctx, &podresourcesv1.ListPodResourcesRequest{})
	if err != nil {
		return nil, fmt.Errorf("kubelet pod-resources %s: List: %w", c.Socket, err)
	}
	out := map[string][]string{}
	for _, pr := range resp.GetPodResources() {
		if pr.GetNamespace() != namespace || pr.GetName() != name {
			continue
		}
		for _, ctr := range pr.GetContainers() {
			for _, dev := range ctr.GetDevices() {
				out[dev.GetResourceName()] = append(out[dev.GetResourceName()], dev.GetDeviceIds()...)
			}
		}
	}
	return out, nil
}

// Allocator hands out a pod's devices to attachments: each NAD using a
// resource takes the next unused device of it.
type Allocator struct {
	devices map[string][]string
	next    map[string]int
}

// NewAllocator wraps a DeviceIDs answer.
func NewAllocator(devices map[string][]string) *Allocator {
	return &Allocator{devices: devices, next: map[string]int{}}
}

// Next returns the next device of resource, "" when none is left.
func (a *Allocator) Next(resource string) string {
	ids := a.devices[resource]
	i := a.next[resource]
	if i >= len(ids) {
		return ""
	}
	a.next[resource] = i + 1
	return ids[i]
}

// Server is a minimal pod-resources server answering List from a fixed
// table — for tests on machines without a kubelet.
type Server struct {
	podresourcesv1.UnimplementedPodResourcesListerServer
	Pods []*podresourcesv1.PodResources
}

// List implements the pod-resources API.
func (s *Server) List(context.Context, *podresourcesv1.ListPodResourcesRequest) (*podresourcesv1.ListPodResourcesResponse, error) {
	return &podresourcesv1.ListPodResourcesResponse{PodResources: s.Pods}, nil
}

// Register adds s to a gRPC server.
func (s *Server) Register(g *grpc.Server) { podresourcesv1.RegisterPodResourcesListerServer(g, s) }
