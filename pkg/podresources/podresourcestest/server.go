// Package podresourcestest is a kubelet pod-resources server for tests on
// machines without a kubelet: the real gRPC server and the kubelet's API
// types, answering List from a table.
package podresourcestest

import (
	"context"
	"net"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// Server answers List with Pods.
type Server struct {
	podresourcesv1.UnimplementedPodResourcesListerServer
	Pods []*podresourcesv1.PodResources
}

// List implements the pod-resources API.
func (s *Server) List(context.Context, *podresourcesv1.ListPodResourcesRequest) (*podresourcesv1.ListPodResourcesResponse, error) {
	return &podresourcesv1.ListPodResourcesResponse{PodResources: s.Pods}, nil
}

// Start serves s on a unix socket in a temporary directory until the test
// ends and returns the socket's path.
func (s *Server) Start(t testing.TB) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "kubelet.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	podresourcesv1.RegisterPodResourcesListerServer(g, s)
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	return sock
}
