// Package delegate runs a container's attachments — the cluster network
// first, then the secondaries in order — recording them in the node cache:
// ADD undoes what it made when any attachment fails, DEL tears everything
// down in reverse from the cache alone (no API server, no pod object), so
// the knit shim can run it too when knitd is not there.
package delegate

import (
	"context"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/knit-cni/knit/pkg/attachcache"
	"github.com/knit-cni/knit/pkg/chain"
	"github.com/knit-cni/knit/pkg/cni"
)

// Runner executes attachments through a delegator (knitd: in-process for
// knit's types, exec for the rest; the shim: exec only).
type Runner struct {
	Delegator cni.Delegator
	Store     *attachcache.Store
	// AfterAdd, if set, runs after each attachment's ADD succeeded (knitd
	// uses it for default-route requests). An error fails the ADD.
	AfterAdd func(ctx context.Context, e *attachcache.Entry, i int, res types.Result) error
}

// AttachError says which attachment failed; the cause keeps its CNI code.
type AttachError struct {
	Network string
	IfName  string
	Err     error
}

func (e *AttachError) Error() string {
	return fmt.Sprintf("network %s (interface %s): %v", e.Network, e.IfName, e.Err)
}

func (e *AttachError) Unwrap() error { return e.Err }

// runtime is the request environment of attachment a.
func runtime(e *attachcache.Entry, a *attachcache.Attachment) chain.Runtime {
	return chain.Runtime{ContainerID: e.ContainerID, Netns: e.Netns, IfName: a.IfName, Args: e.Args, Path: e.Path}
}

// Add attaches every network of e in order. The entry is written before
// the first delegate runs (so an interrupted ADD can still be torn down)
// and again, complete with results, at the end. On failure everything done
// so far is deleted in reverse and the entry removed; the error is an
// *AttachError naming the failed network.
func (r *Runner) Add(ctx context.Context, e *attachcache.Entry) ([]types.Result, error) {
	e.Complete = false
	if err := r.Store.Write(e); err != nil {
		return nil, cni.Errorf(types.ErrIOFailure, "%v", err)
	}
	results := make([]types.Result, len(e.Attachments))
	for i := range e.Attachments {
		res, err := r.addOne(ctx, e, i)
		if err != nil {
			if rerr := r.rollback(ctx, e, i); rerr != nil {
				err = &rollbackError{err: err, rollback: rerr}
			}
			return nil, err
		}
		results[i] = res
	}
	e.Complete = true
	if err := r.Store.Write(e); err != nil {
		err = cni.Errorf(types.ErrIOFailure, "%v", err)
		if rerr := r.rollback(ctx, e, len(e.Attachments)-1); rerr != nil {
			return nil, &rollbackError{err: err, rollback: rerr}
		}
		return nil, err
	}
	return results, nil
}

func (r *Runner) addOne(ctx context.Context, e *attachcache.Entry, i int) (types.Result, error) {
	a := &e.Attachments[i]
	fail := func(err error) error { return &AttachError{Network: a.Network, IfName: a.IfName, Err: err} }
	n, err := chain.Parse(a.Config)
	if err != nil {
		return nil, fail(err)
	}
	res, err := n.Add(ctx, r.Delegator, runtime(e, a), a.RuntimeConfig)
	if err != nil {
		return nil, fail(err)
	}
	if a.Result, err = n.EncodeResult(res); err != nil {
		return nil, fail(err)
	}
	if r.AfterAdd != nil {
		if err := r.AfterAdd(ctx, e, i, res); err != nil {
			return nil, fail(err)
		}
	}
	return res, nil
}

// rollbackError is an ADD failure whose cleanup failed too: the entry is
// kept so the runtime's DEL (or GC) can finish the job.
type rollbackError struct {
	err, rollback error
}

func (e *rollbackError) Error() string {
	return fmt.Sprintf("%v (cleanup incomplete, will be retried on DEL: %v)", e.err, e.rollback)
}

func (e *rollbackError) Unwrap() error { return e.err }

// rollback deletes attachments last..0 and, when all went, the entry.
func (r *Runner) rollback(ctx context.Context, e *attachcache.Entry, last int) error {
	// Cleanup must run to the end even if the request was cancelled.
	ctx = context.WithoutCancel(ctx)
	var errs []error
	for i := last; i >= 0; i-- {
		if err := r.delOne(ctx, e, i); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return r.Store.Remove(e.ContainerID, e.IfName)
}

func (r *Runner) delOne(ctx context.Context, e *attachcache.Entry, i int) error {
	a := &e.Attachments[i]
	n, err := chain.Parse(a.Config)
	if err == nil {
		err = n.Del(ctx, r.Delegator, runtime(e, a), a.RuntimeConfig, a.Result)
	}
	if err != nil {
		return &AttachError{Network: a.Network, IfName: a.IfName, Err: err}
	}
	return nil
}

// Del tears down every attachment of e in reverse order, trying all of
// them, and returns the first error. The entry is removed only when all
// succeeded, so a repeated DEL retries what failed.
func (r *Runner) Del(ctx context.Context, e *attachcache.Entry) error {
	var first error
	for i := len(e.Attachments) - 1; i >= 0; i-- {
		if err := r.delOne(ctx, e, i); err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return first
	}
	return r.Store.Remove(e.ContainerID, e.IfName)
}

// Check runs CHECK for every attachment in order with its cached result.
// Networks older than spec 0.4.0 (or with disableCheck) have no CHECK and
// are skipped, as Multus does: a pod mixing versions is still checkable.
func (r *Runner) Check(ctx context.Context, e *attachcache.Entry) error {
	if !e.Complete {
		return cni.Errorf(types.ErrTryAgainLater, "container %s: ADD did not complete", e.ContainerID)
	}
	for i := range e.Attachments {
		a := &e.Attachments[i]
		n, err := chain.Parse(a.Config)
		if err == nil && !n.Checkable() {
			continue
		}
		if err == nil {
			err = n.Check(ctx, r.Delegator, runtime(e, a), a.RuntimeConfig, a.Result)
		}
		if err != nil {
			return &AttachError{Network: a.Network, IfName: a.IfName, Err: err}
		}
	}
	return nil
}
