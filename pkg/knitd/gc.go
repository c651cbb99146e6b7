package knitd

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/knit-cni/knit/pkg/attachcache"
	"github.com/knit-cni/knit/pkg/chain"
	"github.com/knit-cni/knit/pkg/cni"
)

// teardown deletes one cached container under its lock, if its entry is
// still there and still satisfies stale (re-checked under the lock).
func (d *Daemon) teardown(ctx context.Context, e *attachcache.Entry, why string, stale func(*attachcache.Entry) bool) error {
	unlock, err := d.store.Lock(e.ContainerID, e.IfName)
	if err != nil {
		return err
	}
	removed := false
	defer func() { unlock(removed) }()
	cur, err := d.store.Read(e.ContainerID, e.IfName)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !stale(cur) {
		return nil
	}
	if err := d.runner.Del(ctx, cur); err != nil {
		d.log.Warn("stale attachments: teardown failed, will retry", "container", cur.ContainerID, "why", why, "err", err)
		return err
	}
	removed = true
	d.log.Info("stale attachments removed", "container", cur.ContainerID, "pod", cur.PodNamespace+"/"+cur.PodName, "why", why)
	return nil
}

// recover tears down ADDs a previous knitd died in the middle of: their
// shim got an error, so the runtime treats them as failed, and whatever
// they attached is garbage.
func (d *Daemon) recover(ctx context.Context) {
	start := time.Now()
	entries, err := d.store.List()
	if err != nil {
		d.log.Warn("reading node cache", "err", err)
	}
	d.gcMu.RLock()
	defer d.gcMu.RUnlock()
	for _, e := range entries {
		if e.Complete {
			continue
		}
		_ = d.teardown(ctx, e, "ADD interrupted by a knitd restart", func(c *attachcache.Entry) bool {
			return !c.Complete && c.Created.Before(start)
		})
	}
}

// gcLoop collects attachments of pods that are gone: absent from the
// informer (or replaced by a pod with another UID) and either without a
// network namespace or gone for longer than gcGrace.
func (d *Daemon) gcLoop(ctx context.Context) {
	tick := time.NewTicker(time.Duration(d.cfg.GCInterval))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if d.kube.synced() {
				d.collectGone(ctx)
			}
		}
	}
}

func (d *Daemon) collectGone(ctx context.Context) {
	entries, err := d.store.List()
	if err != nil {
		d.log.Warn("reading node cache", "err", err)
	}
	now := time.Now()
	d.gcMu.RLock()
	defer d.gcMu.RUnlock()
	seen := map[string]bool{}
	for _, e := range entries {
		if !e.Complete || e.PodUID == "" {
			continue
		}
		seen[e.PodUID] = true
		if d.podExists(e) {
			d.goneMu.Lock()
			delete(d.gone, e.PodUID)
			d.goneMu.Unlock()
			continue
		}
		d.goneMu.Lock()
		since, ok := d.gone[e.PodUID]
		if !ok {
			since = now
			d.gone[e.PodUID] = now
		}
		d.goneMu.Unlock()
		if !netnsGone(e.Netns) && now.Sub(since) < time.Duration(d.cfg.GCGrace) {
			continue
		}
		_ = d.teardown(ctx, e, "pod gone", func(c *attachcache.Entry) bool { return c.Complete && !d.podExists(c) })
	}
	d.goneMu.Lock()
	for uid := range d.gone {
		if !seen[uid] {
			delete(d.gone, uid)
		}
	}
	d.goneMu.Unlock()
}

func (d *Daemon) podExists(e *attachcache.Entry) bool {
	p, ok := d.kube.cachedPod(e.PodNamespace, e.PodName)
	return ok && (string(p.UID) == e.PodUID || isStatic(p))
}

func netnsGone(path string) bool {
	if path == "" {
		return true
	}
	_, err := os.Stat(path)
	return errors.Is(err, os.ErrNotExist)
}

// gcCommand serves CNI GC: every cached attachment of the knit network
// not in the runtime's valid list is torn down (which releases what its
// delegates hold). With ForwardGC, the delegate networks then get GC with
// the attachments knit still has on them.
func (d *Daemon) gcCommand(ctx context.Context, req *cni.Request) error {
	valid, err := cni.ValidAttachments(req.Config)
	if err != nil {
		return err
	}
	keep := map[cni.Attachment]bool{}
	for _, a := range valid {
		keep[a] = true
	}
	d.gcMu.Lock()
	defer d.gcMu.Unlock()
	entries, lerr := d.store.List()
	var first error
	var live []*attachcache.Entry
	for _, e := range entries {
		if keep[cni.Attachment{ContainerID: e.ContainerID, IfName: e.IfName}] {
			live = append(live, e)
			continue
		}
		err := d.teardown(ctx, e, "not in the runtime's GC list", func(c *attachcache.Entry) bool {
			return !keep[cni.Attachment{ContainerID: c.ContainerID, IfName: c.IfName}]
		})
		if err != nil && first == nil {
			first = err
		}
	}
	if first == nil && lerr != nil {
		first = cni.Errorf(types.ErrIOFailure, "%v", lerr)
	}
	if d.cfg.ForwardGC {
		if err := d.forwardGC(ctx, live, req.Path); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// forwardGC sends GC to each delegate network knit has attachments on,
// listing those attachments as valid.
func (d *Daemon) forwardGC(ctx context.Context, live []*attachcache.Entry, path []string) error {
	type group struct {
		conf  []byte
		valid []cni.Attachment
	}
	groups := map[string]*group{}
	for _, e := range live {
		for _, a := range e.Attachments {
			g := groups[a.Network]
			if g == nil {
				g = &group{}
				groups[a.Network] = g
			}
			g.conf = a.Config
			g.valid = append(g.valid, cni.Attachment{ContainerID: e.ContainerID, IfName: a.IfName})
		}
	}
	var first error
	for name, g := range groups {
		n, err := chain.Parse(g.conf)
		if err == nil {
			err = n.GC(ctx, d.registry, path, g.valid)
		}
		if err != nil {
			d.log.Warn("delegate GC", "network", name, "err", err)
			if first == nil {
				first = err
			}
		}
	}
	return first
}
