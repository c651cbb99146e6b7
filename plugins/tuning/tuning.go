// Package tuning is the CNI tuning meta plugin: chained after a main plugin,
// it sets network sysctls in the container namespace and the MAC, MTU,
// promiscuous and all-multicast modes and transmit queue length of the
// interface the main plugin created. What it changes is saved first and put
// back on DEL.
package tuning

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/netns"
	"github.com/knit-cni/knit/pkg/sysctl"
)

const (
	// DefaultDataDir holds saved attributes. It is under /run: the links
	// they describe do not survive a reboot either, so neither should they.
	DefaultDataDir = "/run/cni/knit/tuning"
	// DefaultAllowlist is the reference's sysctl allowlist file. When it
	// exists, every sysctl key must match one of its patterns.
	DefaultAllowlist = "/etc/cni/tuning/allowlist.conf"
)

// Plugin implements cni.Plugin and cni.GarbageCollector. The zero value
// uses the defaults; tests point the fields elsewhere.
type Plugin struct {
	// DataDir replaces DefaultDataDir when the config has no dataDir.
	DataDir string
	// AllowlistPath replaces DefaultAllowlist.
	AllowlistPath string
}

func (p Plugin) dataDir(c *Config) string {
	switch {
	case c.DataDir != "":
		return c.DataDir
	case p.DataDir != "":
		return p.DataDir
	}
	return DefaultDataDir
}

// allowlist returns the allowlist patterns, nil when there is no file.
func (p Plugin) allowlist() ([]*regexp.Regexp, error) {
	path := p.AllowlistPath
	if path == "" {
		path = DefaultAllowlist
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading sysctl allowlist: %w", err)
	}
	return parseAllowlist(data, path)
}

// load parses the config and resolves the settings for this request.
func (p Plugin) load(req *cni.Request) (*Config, *settings, *current.Result, error) {
	conf, err := parse(req.Config)
	if err != nil {
		return nil, nil, nil, err
	}
	prev, err := conf.PrevResult()
	if err != nil {
		return nil, nil, nil, err
	}
	if prev == nil {
		return nil, nil, nil, cni.ConfigError("prevResult", "tuning is a chained plugin: list it after the plugin that creates %s", req.IfName)
	}
	allow, err := p.allowlist()
	if err != nil {
		return nil, nil, nil, err
	}
	s, err := conf.resolve(req.Args, req.IfName, allow)
	if err != nil {
		return nil, nil, nil, err
	}
	return conf, s, prev, nil
}

// Add saves the current values of what it is about to change, then
// changes it. On any failure it puts back what it changed.
func (p Plugin) Add(ctx context.Context, req *cni.Request) (types.Result, error) {
	conf, s, prev, err := p.load(req)
	if err != nil {
		return nil, err
	}
	t, err := netns.OpenTarget(req.Netns)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	link, err := t.NL.LinkByName(req.IfName)
	if err != nil {
		return nil, fmt.Errorf("finding %s in the container: %w", req.IfName, err)
	}
	if !s.changesLink() && len(s.sysctls) == 0 {
		return prev, nil
	}
	path, err := stateFile(p.dataDir(conf), req.ContainerID, req.IfName)
	if err != nil {
		return nil, err
	}
	st, err := snapshot(t, link, s, req)
	if err != nil {
		return nil, err
	}
	if err := mergeEarlier(path, st); err != nil {
		return nil, err
	}
	if err := writeState(path, st); err != nil {
		return nil, err
	}
	if err := apply(t, link, s); err != nil {
		if rerr := restore(t, st); rerr != nil {
			return nil, errors.Join(err, fmt.Errorf("rolling back: %w", rerr))
		}
		return nil, errors.Join(err, removeState(path))
	}
	updateResult(prev, req, s)
	return prev, nil
}

// snapshot reads the values s is about to overwrite.
func snapshot(t *netns.Target, link netlink.Link, s *settings, req *cni.Request) (*saved, error) {
	a := link.Attrs()
	st := &saved{ContainerID: req.ContainerID, IfName: req.IfName}
	if s.mac != nil {
		st.Mac = a.HardwareAddr.String()
	}
	if s.mtu != 0 {
		st.Mtu = a.MTU
	}
	if s.txQLen != nil {
		q := a.TxQLen
		st.TxQLen = &q
	}
	if s.promisc {
		on := a.Promisc != 0
		st.Promisc = &on
	}
	if s.allmulti != nil {
		on := a.RawFlags&unix.IFF_ALLMULTI != 0
		st.Allmulti = &on
	}
	if len(s.sysctls) == 0 {
		return st, nil
	}
	err := t.Do(func() error {
		for _, sc := range s.sysctls {
			v, err := sysctl.Get(sc.path)
			if errors.Is(err, fs.ErrNotExist) {
				return cni.ConfigError("sysctl", "%q: no such sysctl in the container (%s)", sc.key, sysctl.Path(sc.path))
			}
			if err != nil {
				return err
			}
			st.Sysctls = append(st.Sysctls, savedSysctl{Path: sc.path, Value: v})
		}
		return nil
	})
	return st, err
}

// mergeEarlier keeps the originals an earlier ADD of the same attachment
// saved: after it the current values are tuned ones, not originals.
func mergeEarlier(path string, st *saved) error {
	old, err := readState(path)
	if err != nil || old == nil {
		return err
	}
	if old.Mac != "" && st.Mac != "" {
		st.Mac = old.Mac
	}
	if old.Mtu != 0 && st.Mtu != 0 {
		st.Mtu = old.Mtu
	}
	if old.TxQLen != nil && st.TxQLen != nil {
		st.TxQLen = old.TxQLen
	}
	if old.Promisc != nil && st.Promisc != nil {
		st.Promisc = old.Promisc
	}
	if old.Allmulti != nil && st.Allmulti != nil {
		st.Allmulti = old.Allmulti
	}
	for i, sc := range st.Sysctls {
		for _, o := range old.Sysctls {
			if o.Path == sc.Path {
				st.Sysctls[i].Value = o.Value
			}
		}
	}
	return nil
}

// apply makes the changes: sysctls first, then the link, in the
// reference's order.
func apply(t *netns.Target, link netlink.Link, s *settings) error {
	if len(s.sysctls) > 0 {
		err := t.Do(func() error {
			for _, sc := range s.sysctls {
				if err := sysctl.Set(sc.path, sc.value); err != nil {
					return fmt.Errorf("setting sysctl %q: %w", sc.key, err)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	h, name := t.NL, link.Attrs().Name
	if s.mac != nil {
		if err := h.LinkSetHardwareAddr(link, s.mac); err != nil {
			return fmt.Errorf("setting MAC of %s to %s: %w", name, s.mac, err)
		}
	}
	if s.promisc {
		if err := h.SetPromiscOn(link); err != nil {
			return fmt.Errorf("setting %s promiscuous: %w", name, err)
		}
	}
	if s.mtu != 0 {
		if err := h.LinkSetMTU(link, s.mtu); err != nil {
			return fmt.Errorf("setting MTU of %s to %d: %w", name, s.mtu, err)
		}
	}
	if s.allmulti != nil {
		if err := setAllmulti(h, link, *s.allmulti); err != nil {
			return err
		}
	}
	if s.txQLen != nil {
		if err := h.LinkSetTxQLen(link, *s.txQLen); err != nil {
			return fmt.Errorf("setting txqueuelen of %s to %d: %w", name, *s.txQLen, err)
		}
	}
	return nil
}

func setAllmulti(h *netlink.Handle, link netlink.Link, on bool) error {
	var err error
	if on {
		err = h.LinkSetAllmulticastOn(link)
	} else {
		err = h.LinkSetAllmulticastOff(link)
	}
	if err != nil {
		return fmt.Errorf("setting all-multicast of %s to %v: %w", link.Attrs().Name, on, err)
	}
	return nil
}

func setPromisc(h *netlink.Handle, link netlink.Link, on bool) error {
	var err error
	if on {
		err = h.SetPromiscOn(link)
	} else {
		err = h.SetPromiscOff(link)
	}
	if err != nil {
		return fmt.Errorf("setting promiscuous mode of %s to %v: %w", link.Attrs().Name, on, err)
	}
	return nil
}

// restore puts back what st saved. A link or sysctl that is gone has
// nothing left to restore. It keeps going after an error and reports all.
func restore(t *netns.Target, st *saved) error {
	var errs []error
	if len(st.Sysctls) > 0 {
		errs = append(errs, t.Do(func() error {
			var errs []error
			for i := len(st.Sysctls) - 1; i >= 0; i-- {
				sc := st.Sysctls[i]
				if err := sysctl.Set(sc.Path, sc.Value); err != nil && !errors.Is(err, fs.ErrNotExist) {
					errs = append(errs, err)
				}
			}
			return errors.Join(errs...)
		}))
	}
	link, err := t.NL.LinkByName(st.IfName)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return errors.Join(errs...)
	}
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	h, name := t.NL, st.IfName
	if st.Mtu != 0 {
		if err := h.LinkSetMTU(link, st.Mtu); err != nil {
			errs = append(errs, fmt.Errorf("restoring MTU of %s: %w", name, err))
		}
	}
	if st.Mac != "" {
		errs = append(errs, restoreMAC(h, link, st.Mac))
	}
	if st.Promisc != nil {
		errs = append(errs, setPromisc(h, link, *st.Promisc))
	}
	if st.Allmulti != nil {
		errs = append(errs, setAllmulti(h, link, *st.Allmulti))
	}
	if st.TxQLen != nil {
		if err := h.LinkSetTxQLen(link, *st.TxQLen); err != nil {
			errs = append(errs, fmt.Errorf("restoring txqueuelen of %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

func restoreMAC(h *netlink.Handle, link netlink.Link, mac string) error {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return fmt.Errorf("saved MAC %q: %w", mac, err)
	}
	if err := h.LinkSetHardwareAddr(link, hw); err != nil {
		return fmt.Errorf("restoring MAC of %s: %w", link.Attrs().Name, err)
	}
	return nil
}

// updateResult reports the new MAC and MTU of the tuned interface.
func updateResult(res *current.Result, req *cni.Request, s *settings) {
	for _, i := range res.Interfaces {
		if i.Name != req.IfName || (i.Sandbox == "" && hasSandboxed(res, req.IfName)) {
			continue
		}
		if s.mac != nil {
			i.Mac = s.mac.String()
		}
		if s.mtu != 0 && i.Mtu != 0 {
			i.Mtu = s.mtu
		}
	}
}

func hasSandboxed(res *current.Result, name string) bool {
	for _, i := range res.Interfaces {
		if i.Name == name && i.Sandbox != "" {
			return true
		}
	}
	return false
}

// Del puts back what ADD saved. A namespace or link that is gone leaves
// nothing to restore; the saved file is removed in every case but a
// failed restore of a link that still exists, so a retried DEL can finish.
func (p Plugin) Del(ctx context.Context, req *cni.Request) error {
	conf, err := parse(req.Config)
	if err != nil {
		return err
	}
	path, err := stateFile(p.dataDir(conf), req.ContainerID, req.IfName)
	if err != nil {
		return err
	}
	st, err := readState(path)
	if err != nil || st == nil {
		if err != nil {
			// An unreadable file can never be restored: drop it.
			return removeState(path)
		}
		return nil
	}
	if req.Netns == "" {
		return removeState(path)
	}
	t, err := netns.OpenTarget(req.Netns)
	if errors.Is(err, netns.ErrNotExist) {
		return removeState(path)
	}
	if err != nil {
		return err
	}
	defer t.Close()
	if err := restore(t, st); err != nil {
		return err
	}
	return removeState(path)
}

// Check compares the configured values with the container's.
func (p Plugin) Check(ctx context.Context, req *cni.Request) error {
	_, s, _, err := p.load(req)
	if err != nil {
		return err
	}
	t, err := netns.OpenTarget(req.Netns)
	if err != nil {
		return err
	}
	defer t.Close()
	if err := checkSysctls(t, s); err != nil {
		return err
	}
	link, err := t.NL.LinkByName(req.IfName)
	if err != nil {
		return fmt.Errorf("finding %s in the container: %w", req.IfName, err)
	}
	return checkLink(link.Attrs(), s)
}

func checkSysctls(t *netns.Target, s *settings) error {
	if len(s.sysctls) == 0 {
		return nil
	}
	return t.Do(func() error {
		for _, sc := range s.sysctls {
			v, err := sysctl.Get(sc.path)
			if err != nil {
				return err
			}
			// The kernel prints multi-value sysctls with tabs.
			if strings.Join(strings.Fields(v), " ") != strings.Join(strings.Fields(sc.value), " ") {
				return fmt.Errorf("sysctl %s is %q, configured %q", sc.key, v, sc.value)
			}
		}
		return nil
	})
}

func checkLink(a *netlink.LinkAttrs, s *settings) error {
	switch {
	case s.mac != nil && a.HardwareAddr.String() != s.mac.String():
		return fmt.Errorf("%s has MAC %s, configured %s", a.Name, a.HardwareAddr, s.mac)
	case s.promisc && a.Promisc == 0:
		return fmt.Errorf("%s is not promiscuous, configured promisc", a.Name)
	case s.mtu != 0 && a.MTU != s.mtu:
		return fmt.Errorf("%s has MTU %d, configured %d", a.Name, a.MTU, s.mtu)
	case s.txQLen != nil && a.TxQLen != *s.txQLen:
		return fmt.Errorf("%s has txqueuelen %d, configured %d", a.Name, a.TxQLen, *s.txQLen)
	case s.allmulti != nil && (a.RawFlags&unix.IFF_ALLMULTI != 0) != *s.allmulti:
		return fmt.Errorf("%s all-multicast is %v, configured %v", a.Name, !*s.allmulti, *s.allmulti)
	}
	return nil
}

// GC drops the saved attributes of attachments that no longer exist.
// Their links are gone with their namespaces, so there is nothing to
// restore.
func (p Plugin) GC(ctx context.Context, req *cni.Request, valid []cni.Attachment) error {
	conf, err := parse(req.Config)
	if err != nil {
		return err
	}
	dir := p.dataDir(conf)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing tuning state: %w", err)
	}
	keep := map[cni.Attachment]bool{}
	for _, a := range valid {
		keep[a] = true
	}
	var errs []error
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		path := filepath.Join(dir, e.Name())
		if strings.HasSuffix(e.Name(), ".json.tmp") {
			errs = append(errs, removeState(path)) // an interrupted write
			continue
		}
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		st, err := readState(path)
		if err == nil && st != nil && keep[cni.Attachment{ContainerID: st.ContainerID, IfName: st.IfName}] {
			continue
		}
		errs = append(errs, removeState(path))
	}
	return errors.Join(errs...)
}
