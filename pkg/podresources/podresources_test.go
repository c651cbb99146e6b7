package podresources

import (
	"context"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/knit-cni/knit/pkg/podresources/podresourcestest"
)

// The client against a fake kubelet pod-resources server on a unix socket.
func TestDeviceIDs(t *testing.T) {
	srv := &podresourcestest.Server{Pods: []*podresourcesv1.PodResources{
		{Name: "other", Namespace: "ns", Containers: []*podresourcesv1.ContainerResources{{Name: "c",
			Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "vendor/vf", DeviceIds: []string{"x"}}}}}},
		{Name: "p", Namespace: "ns", Containers: []*podresourcesv1.ContainerResources{
			{Name: "a", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "vendor/vf", DeviceIds: []string{"0000:03:00.1"}},
				{ResourceName: "vendor/gpu", DeviceIds: []string{"g0"}}}},
			{Name: "b", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "vendor/vf", DeviceIds: []string{"0000:03:00.2"}}}}}},
	}}
	c := &Client{Socket: srv.Start(t)}
	got, err := c.DeviceIDs(context.Background(), "ns", "p")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"vendor/vf": {"0000:03:00.1", "0000:03:00.2"}, "vendor/gpu": {"g0"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	a := NewAllocator(got)
	if a.Next("vendor/vf") != "0000:03:00.1" || a.Next("vendor/vf") != "0000:03:00.2" || a.Next("vendor/vf") != "" || a.Next("none") != "" {
		t.Error("allocator order")
	}
	if got, err := c.DeviceIDs(context.Background(), "ns", "absent"); err != nil || len(got) != 0 {
		t.Errorf("absent pod: %v %v", got, err)
	}
	bad := &Client{Socket: filepath.Join(t.TempDir(), "none.sock")}
	if _, err := bad.DeviceIDs(context.Background(), "ns", "p"); err == nil {
		t.Error("no kubelet: no error")
	}
}

// A kubelet answering with a gRPC error status (here: the service is not
// there) is an error naming the status, not an empty device list.
func TestStatusError(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "kubelet.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer() // no pod-resources service registered
	go func() { _ = g.Serve(ln) }()
	defer g.Stop()
	_, err = (&Client{Socket: sock}).DeviceIDs(context.Background(), "ns", "p")
	if err == nil || !strings.Contains(err.Error(), "gRPC status 12") {
		t.Fatalf("err = %v, want gRPC status 12 (unimplemented)", err)
	}
}

// The hand-written reader agrees with the protobuf library on messages the
// library encodes, and never fails on garbage by panicking.
func FuzzDevicesOf(f *testing.F) {
	msg, err := proto.Marshal(&podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{
		{Name: "p", Namespace: "ns", Containers: []*podresourcesv1.ContainerResources{{Name: "c", CpuIds: []int64{1, 2},
			Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "r", DeviceIds: []string{"a", "b"},
				Topology: &podresourcesv1.TopologyInfo{Nodes: []*podresourcesv1.NUMANode{{ID: 1}}}}}}}}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(msg)
	f.Add([]byte{0x0a, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		out := map[string][]string{}
		if err := devicesOf(b, "ns", "p", out); err != nil {
			return
		}
		var want podresourcesv1.ListPodResourcesResponse
		if proto.Unmarshal(b, &want) != nil {
			return // protowire is laxer than full decoding (e.g. bad UTF-8)
		}
		exp := map[string][]string{}
		for _, pr := range want.GetPodResources() {
			if pr.GetName() != "p" || pr.GetNamespace() != "ns" {
				continue
			}
			for _, c := range pr.GetContainers() {
				for _, d := range c.GetDevices() {
					exp[d.GetResourceName()] = append(exp[d.GetResourceName()], d.GetDeviceIds()...)
				}
			}
		}
		if !reflect.DeepEqual(out, exp) {
			t.Errorf("devicesOf = %v, protobuf says %v", out, exp)
		}
	})
}
