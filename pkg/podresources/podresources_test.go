package podresources

import (
	"context"
	"net"
	"path/filepath"
	"reflect"
	"testing"

	"google.golang.org/grpc"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// The client against a fake kubelet pod-resources server on a unix socket.
func TestDeviceIDs(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "kubelet.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	srv := &Server{Pods: []*podresourcesv1.PodResources{
		{Name: "other", Namespace: "ns", Containers: []*podresourcesv1.ContainerResources{{Name: "c",
			Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "vendor/vf", DeviceIds: []string{"x"}}}}}},
		{Name: "p", Namespace: "ns", Containers: []*podresourcesv1.ContainerResources{
			{Name: "a", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "vendor/vf", DeviceIds: []string{"0000:03:00.1"}},
				{ResourceName: "vendor/gpu", DeviceIds: []string{"g0"}}}},
			{Name: "b", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "vendor/vf", DeviceIds: []string{"0000:03:00.2"}}}}}},
	}}
	srv.Register(g)
	go func() { _ = g.Serve(ln) }()
	defer g.Stop()

	c := &Client{Socket: sock}
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
