package shim

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/knit-cni/knit/pkg/attachcache"
	"github.com/knit-cni/knit/pkg/cni"
)

// serve runs a fake knitd answering with h on a unix socket.
func serve(t *testing.T, h func(*Request) Response) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "knitd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Serve(ctx, ln, time.Second, func(_ context.Context, r *Request) Response { return h(r) })
	}()
	t.Cleanup(func() { cancel(); <-done })
	return sock
}

func conf(sock, cache string) []byte {
	return []byte(`{"cniVersion":"1.0.0","name":"knit-cni-network","type":"knit","socket":"` + sock + `","cacheDir":"` + cache + `"}`)
}

func TestForward(t *testing.T) {
	// The race detector cannot see the socket order the shim's raw
	// syscalls give, so the request comes back over a channel.
	seenc := make(chan *Request, 2)
	sock := serve(t, func(r *Request) Response {
		seenc <- r
		if r.Command == "CHECK" {
			return Response{Error: &types.Error{Code: 7, Msg: "net1: master: gone"}}
		}
		return Response{Result: json.RawMessage(`{"cniVersion":"1.0.0","ips":[]}`)}
	})
	req := &cni.Request{Command: cni.CmdAdd, ContainerID: "c1", Netns: "/ns", IfName: "eth0", Args: "A=B",
		Path: []string{"/opt/cni/bin"}, Config: conf(sock, t.TempDir()), NetnsOverride: true}
	res, err := Handle(context.Background(), req)
	if err != nil || string(res) != `{"cniVersion":"1.0.0","ips":[]}` {
		t.Fatalf("ADD: %s %v", res, err)
	}
	if seen := <-seenc; seen.ContainerID != "c1" || seen.Netns != "/ns" || seen.IfName != "eth0" || seen.Args != "A=B" || seen.Path[0] != "/opt/cni/bin" ||
		!seen.NetnsOverride {
		t.Errorf("forwarded %+v", seen)
	}
	req.Command = cni.CmdCheck
	_, err = Handle(context.Background(), req)
	<-seenc
	if te := WireError(err); te.Code != 7 || te.Msg != "net1: master: gone" {
		t.Errorf("CHECK error %+v", te)
	}
}

func TestUnreachable(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nothing.sock")
	req := &cni.Request{Command: cni.CmdAdd, ContainerID: "c1", Netns: "/ns", IfName: "eth0", Config: conf(sock, t.TempDir())}
	_, err := Handle(context.Background(), req)
	te := WireError(err)
	if te.Code != types.ErrTryAgainLater || !strings.Contains(te.Msg, sock) {
		t.Errorf("ADD without knitd: %+v", te)
	}
	req.Command = cni.CmdStatus
	if te := WireError(mustErr(Handle(context.Background(), req))); te.Code != cni.ErrNotReady {
		t.Errorf("STATUS without knitd: %+v", te)
	}
	// DEL without knitd and without a cache entry: success.
	req.Command = cni.CmdDel
	if _, err := Handle(context.Background(), req); err != nil {
		t.Errorf("DEL without knitd: %v", err)
	}
	// ... but not into the shim's own (the host's) namespace, which the
	// delegates would tear links out of; CNI_NETNS_OVERRIDE allows it.
	req.Netns = "/proc/self/ns/net"
	if te := WireError(mustErr(Handle(context.Background(), req))); te.Code != types.ErrInvalidNetNS {
		t.Errorf("DEL into the host namespace without knitd: %+v, want code 8", te)
	}
	req.NetnsOverride = true
	if _, err := Handle(context.Background(), req); err != nil {
		t.Errorf("DEL with CNI_NETNS_OVERRIDE without knitd: %v", err)
	}
}

func mustErr(_ []byte, err error) error { return err }

type recorder struct{ calls []string }

func (r *recorder) Delegate(_ context.Context, typ string, req *cni.Request) (types.Result, error) {
	var m map[string]any
	_ = json.Unmarshal(req.Config, &m)
	r.calls = append(r.calls, typ+"/"+string(req.Command)+"/"+req.IfName+"/"+req.Netns)
	if m["prevResult"] == nil {
		return nil, errors.New("no prevResult")
	}
	return nil, nil
}

// DEL from the cache runs the cached networks in reverse with their
// results, with the runtime's current netns, and removes the entry.
func TestDelFromCache(t *testing.T) {
	s := &attachcache.Store{Dir: t.TempDir()}
	res := `{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}`
	e := &attachcache.Entry{ContainerID: "c1", IfName: "eth0", Netns: "/old", Complete: true, Attachments: []attachcache.Attachment{
		{Network: "cbr0", IfName: "eth0", Config: []byte(`{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"bridge"}]}`), Result: []byte(res)},
		{Network: "ns/a", IfName: "net1", Config: []byte(`{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"macvlan"},{"type":"tuning"}]}`), Result: []byte(res)}}}
	if err := s.Write(e); err != nil {
		t.Fatal(err)
	}
	r := &recorder{}
	req := &cni.Request{Command: cni.CmdDel, ContainerID: "c1", IfName: "eth0", Netns: "/new"}
	if err := DelFromCache(context.Background(), r, s, req); err != nil {
		t.Fatal(err)
	}
	want := "tuning/DEL/net1//new macvlan/DEL/net1//new bridge/DEL/eth0//new"
	if strings.Join(r.calls, " ") != want {
		t.Errorf("calls %v, want %s", r.calls, want)
	}
	if _, err := s.Read("c1", "eth0"); !errors.Is(err, os.ErrNotExist) {
		t.Error("entry left")
	}
	if m, _ := filepath.Glob(filepath.Join(s.Dir, "*.lock")); len(m) != 0 {
		t.Errorf("lock files left: %v", m)
	}
}

func TestParseConfDefaults(t *testing.T) {
	c, err := ParseConf([]byte(`{"cniVersion":"0.3.1","name":"n","type":"knit","runtimeConfig":{"portMappings":[]}}`))
	if err != nil || c.Socket != DefaultSocket || c.CacheDir != DefaultCacheDir || c.RuntimeConfig["portMappings"] == nil {
		t.Fatalf("%+v %v", c, err)
	}
	if _, err := ParseConf([]byte(`{"cniVersion":"9.9.9"}`)); err == nil {
		t.Error("bad version accepted")
	}
}

func TestWireError(t *testing.T) {
	inner := cni.ConfigError("master", "gone")
	wrapped := errors.Join(errors.New("network ns/a"), inner)
	if te := WireError(inner); te.Code != 7 || te.Msg != "master: gone" {
		t.Errorf("%+v", te)
	}
	if te := WireError(wrapped); te.Code != 7 || !strings.Contains(te.Msg, "network ns/a") {
		t.Errorf("%+v", te)
	}
	if te := WireError(errors.New("plain")); te.Code != types.ErrInternal {
		t.Errorf("%+v", te)
	}
	_ = current.ImplementedSpecVersion
}

// A knitd that dies after reading the request (connection closed without
// an answer) is "unreachable": the shim reports try-again-later.
func TestConnectionLost(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "knitd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			buf := make([]byte, 10)
			_, _ = c.Read(buf)
			c.Close()
		}
	}()
	req := &cni.Request{Command: cni.CmdAdd, ContainerID: "c1", Netns: "/ns", IfName: "eth0", Config: conf(sock, t.TempDir())}
	_, err = Handle(context.Background(), req)
	if te := WireError(err); te.Code != types.ErrTryAgainLater || !strings.Contains(te.Details, "connection lost") {
		t.Errorf("%+v", te)
	}
}

// The shim's short path has no skel in front of it: Handle makes skel's
// config check itself, before knitd is asked.
func TestNetworkNameChecked(t *testing.T) {
	for _, c := range []struct{ conf string }{
		{`{"cniVersion":"1.0.0","type":"knit"}`},
		{`{"cniVersion":"1.0.0","name":"bad/name","type":"knit"}`},
	} {
		req := &cni.Request{Command: cni.CmdAdd, ContainerID: "c1", Netns: "/ns", IfName: "eth0", Config: []byte(c.conf)}
		if te := WireError(mustErr(Handle(context.Background(), req))); te.Code != types.ErrInvalidNetworkConfig {
			t.Errorf("%s: %+v, want code 7", c.conf, te)
		}
	}
}
