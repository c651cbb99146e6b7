package shim

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"

	"github.com/knit-cni/knit/pkg/attachcache"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/delegate"
)

// Handle serves one CNI call in the shim: it forwards the call to knitd
// and returns the printed result (ADD) or a CNI error. When knitd cannot be
// reached, ADD and CHECK fail with "try again later" (code 11) naming the
// socket, STATUS reports "not available" (code 50), and DEL tears the
// container down from the node cache itself by exec'ing the delegate
// plugins from CNI_PATH.
func Handle(ctx context.Context, req *cni.Request) ([]byte, error) {
	conf, err := ParseConf(req.Config)
	if err != nil {
		return nil, err
	}
	// skel's config check, for calls that did not come through skel.
	if conf.Name == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "missing network name", "")
	}
	if err := utils.ValidateNetworkName(conf.Name); err != nil {
		return nil, err
	}
	resp, err := NewClient(conf.Socket).Do(ctx, FromCNIRequest(req))
	if err != nil {
		if !errors.Is(err, ErrUnreachable) {
			return nil, cni.Errorf(types.ErrInternal, "%v", err)
		}
		return nil, unreachable(ctx, conf, req, err)
	}
	if resp.Error != nil {
		return nil, resp.Error
	}
	return resp.Result, nil
}

func unreachable(ctx context.Context, conf *Conf, req *cni.Request, err error) error {
	switch req.Command {
	case cni.CmdDel:
		// knitd would have refused the host's namespace; the shim, in
		// the host's namespace itself, does so here.
		own, oerr := cni.OwnNetnsID()
		if oerr != nil {
			return cni.Errorf(types.ErrInternal, "own network namespace: %v", oerr)
		}
		if err := cni.CheckNetns(req, own); err != nil {
			return err
		}
		return DelFromCache(ctx, cni.Registry{}, &attachcache.Store{Dir: conf.CacheDir}, req)
	case cni.CmdStatus:
		return cni.Errorf(cni.ErrNotReady, "knit: node daemon not available: %v", err)
	}
	return &cni.Error{Code: types.ErrTryAgainLater,
		Msg:     fmt.Sprintf("knit: node daemon knitd is not reachable on %s; try again later", conf.Socket),
		Details: err.Error(), Err: err}
}

// DelFromCache tears down the attachments recorded for the request's
// (container, interface), under the attachment lock; nothing recorded is
// success (DEL must be idempotent). The runtime's CNI_NETNS and CNI_PATH
// win over the recorded ones: the namespace may be gone by now.
func DelFromCache(ctx context.Context, d cni.Delegator, store *attachcache.Store, req *cni.Request) error {
	unlock, err := store.Lock(req.ContainerID, req.IfName)
	if err != nil {
		return cni.Errorf(types.ErrIOFailure, "%v", err)
	}
	done := false
	defer func() { unlock(done) }()
	e, err := store.Read(req.ContainerID, req.IfName)
	if errors.Is(err, os.ErrNotExist) {
		done = true
		return nil
	}
	if err != nil {
		return cni.Errorf(types.ErrIOFailure, "%v", err)
	}
	e.Netns = req.Netns
	if len(req.Path) > 0 {
		e.Path = req.Path
	}
	r := &delegate.Runner{Delegator: d, Store: store}
	if err := r.Del(ctx, e); err != nil {
		return err
	}
	done = true
	return nil
}
