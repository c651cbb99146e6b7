package chaintest

import (
	"context"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/knit-cni/knit/pkg/testutil"
)

// Chain runs a conflist the way a container runtime does, with libcni
// (prevResult threading, result cache, reverse-order DEL), exec'ing the
// plugin binaries from a thread inside Host, so the chain's "host" is a
// test namespace and not the machine's.
type Chain struct {
	t    testing.TB
	Host *testutil.NS
	cni  *libcni.CNIConfig
	List *libcni.NetworkConfigList
}

// NewChain parses conflist and runs its plugins from pluginDir.
func NewChain(t testing.TB, host *testutil.NS, pluginDir string, conflist []byte) *Chain {
	t.Helper()
	list, err := libcni.ConfListFromBytes(conflist)
	if err != nil {
		t.Fatalf("conflist: %v", err)
	}
	return &Chain{t: t, Host: host, List: list,
		cni: libcni.NewCNIConfigWithCacheDir([]string{pluginDir}, t.TempDir(), nil)}
}

// in runs f on a thread in the host namespace; exec'd plugins inherit it.
func (c *Chain) in(f func() error) error { return c.Host.Do(f) }

// Add runs ADD through the chain and returns the final result.
func (c *Chain) Add(rt *libcni.RuntimeConf) (*current.Result, error) {
	var res types.Result
	err := c.in(func() (err error) {
		res, err = c.cni.AddNetworkList(context.Background(), c.List, rt)
		return err
	})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

// Check runs CHECK through the chain with the cached result.
func (c *Chain) Check(rt *libcni.RuntimeConf) error {
	return c.in(func() error { return c.cni.CheckNetworkList(context.Background(), c.List, rt) })
}

// Del runs DEL through the chain in reverse order.
func (c *Chain) Del(rt *libcni.RuntimeConf) error {
	return c.in(func() error { return c.cni.DelNetworkList(context.Background(), c.List, rt) })
}

// GC runs GC with the given attachments valid.
func (c *Chain) GC(valid ...types.GCAttachment) error {
	return c.in(func() error {
		return c.cni.GCNetworkList(context.Background(), c.List, &libcni.GCArgs{ValidAttachments: valid})
	})
}
