package hostdevice

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/link"
	"github.com/knit-cni/knit/pkg/netns"
	"github.com/knit-cni/knit/pkg/nlsafe"
)

// state is what a device looked like in the host before ADD moved it, so a
// failed ADD can put it back exactly.
type state struct {
	name, alias string
	up          bool
}

// moveIn moves dev from host into cont as ifName. The device goes down (a
// device is renamed only while down; moving closes it anyway) and carries
// its host name in its alias. If the container already has a link with
// the device's host name, it travels under a temporary name.
func moveIn(host, cont *netns.Target, dev netlink.Link, ifName string) (netlink.Link, state, error) {
	a := dev.Attrs()
	st := state{name: a.Name, alias: a.Alias, up: a.Flags&net.FlagUp != 0}
	err := func() error {
		if err := host.NL.LinkSetDown(dev); err != nil {
			return fmt.Errorf("setting %s down: %w", st.name, err)
		}
		if err := host.NL.LinkSetAlias(dev, st.name); err != nil {
			return fmt.Errorf("saving %s's name in its alias: %w", st.name, err)
		}
		return nil
	}()
	if err != nil {
		return nil, st, errors.Join(err, st.restoreHost(host, dev))
	}
	travel, err := move(host.NL, dev, cont)
	if err != nil {
		return nil, st, errors.Join(fmt.Errorf("moving %s into the container: %w", st.name, err), st.restoreHost(host, dev))
	}
	l, err := cont.NL.LinkByName(travel)
	if err == nil {
		err = cont.NL.LinkSetName(l, ifName)
	}
	if err == nil {
		l, err = cont.NL.LinkByName(ifName)
	}
	if err != nil {
		err = fmt.Errorf("renaming %s to %s in the container: %w", st.name, ifName, err)
		return nil, st, errors.Join(err, st.restore(host, cont, travel))
	}
	return l, st, nil
}

// move moves l from the namespace behind h into to, under its own name or,
// if to has that name already, a temporary one. It returns the name l has
// in to.
func move(h *netlink.Handle, l netlink.Link, to *netns.Target) (string, error) {
	name := l.Attrs().Name
	err := h.LinkSetNsFd(l, to.Fd())
	if !errors.Is(err, unix.EEXIST) {
		return name, err
	}
	tmp, err := link.RandomName("knit")
	if err != nil {
		return "", err
	}
	if err := h.LinkSetName(l, tmp); err != nil {
		return "", err
	}
	if err := h.LinkSetNsFd(l, to.Fd()); err != nil {
		return "", errors.Join(err, h.LinkSetName(l, name))
	}
	return tmp, nil
}

// restore undoes moveIn for the device now named cur in the container: back
// to the host under its old name, with its old alias and up state.
func (st state) restore(host, cont *netns.Target, cur string) error {
	l, err := cont.NL.LinkByName(cur)
	if err != nil {
		return fmt.Errorf("finding %s to move it back: %w", cur, err)
	}
	if err := toHost(host, cont, l, st.name); err != nil {
		return err
	}
	hl, err := host.NL.LinkByName(st.name)
	if err != nil {
		return fmt.Errorf("finding %s back in the host: %w", st.name, err)
	}
	return st.restoreHost(host, hl)
}

// restoreHost gives a device in the host its saved alias and up state.
func (st state) restoreHost(host *netns.Target, l netlink.Link) error {
	var errs []error
	if l.Attrs().Name != st.name {
		errs = append(errs, host.NL.LinkSetName(l, st.name))
	}
	errs = append(errs, host.NL.LinkSetAlias(l, st.alias))
	if st.up {
		errs = append(errs, host.NL.LinkSetUp(l))
	}
	return errors.Join(errs...)
}

// moveOut returns the device named ifName in cont to the host under the
// name in its alias (its own name if it has none). Gone already is
// success. If the host has taken the name meanwhile the device stays in the
// container, so that a retried DEL can finish the job.
func moveOut(host, cont *netns.Target, ifName string) error {
	l, err := cont.NL.LinkByName(ifName)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("looking up %s: %w", ifName, err)
	}
	name := l.Attrs().Alias
	if name == "" {
		name = ifName
	}
	if _, err := host.NL.LinkByName(name); err == nil {
		return fmt.Errorf("cannot return %s to the host: the host already has a link named %q", ifName, name)
	}
	return toHost(host, cont, l, name)
}

// toHost moves l (down) from cont to host and names it name there. It
// travels under a temporary name: its host name may be taken in the
// container (a host "eth0" next to the container's own eth0). If the final
// rename fails it is moved back, so nothing is left half done.
func toHost(host, cont *netns.Target, l netlink.Link, name string) error {
	cur := l.Attrs().Name
	tmp, err := link.RandomName("knit")
	if err != nil {
		return err
	}
	if err := cont.NL.LinkSetDown(l); err != nil {
		return fmt.Errorf("setting %s down: %w", cur, err)
	}
	if err := cont.NL.LinkSetName(l, tmp); err != nil {
		return fmt.Errorf("renaming %s for the move: %w", cur, err)
	}
	if err := cont.NL.LinkSetNsFd(l, host.Fd()); err != nil {
		return errors.Join(fmt.Errorf("moving %s to the host: %w", cur, err), cont.NL.LinkSetName(l, cur))
	}
	hl, err := host.NL.LinkByName(tmp)
	if err == nil {
		err = host.NL.LinkSetName(hl, name)
	}
	if err == nil {
		return nil
	}
	err = fmt.Errorf("renaming %s to %s in the host: %w", cur, name, err)
	if hl != nil {
		if _, merr := move(host.NL, hl, cont); merr == nil {
			if cl, lerr := cont.NL.LinkByName(tmp); lerr == nil {
				_ = cont.NL.LinkSetName(cl, cur)
			}
		}
	}
	return err
}

// recoverOrphan handles a DEL whose namespace is gone: a physical device
// returns to the host by itself when its namespace dies, under its
// container name. If the configured device name is free and a link carries
// it as its alias (host-device's mark), that link gets its name back.
func recoverOrphan(h *netlink.Handle, device string) error {
	if device == "" {
		return nil
	}
	if _, err := h.LinkByName(device); err == nil {
		return nil
	}
	links, err := nlsafe.LinkList(h)
	if err != nil {
		return fmt.Errorf("listing links: %w", err)
	}
	for _, l := range links {
		if l.Attrs().Alias != device || l.Attrs().Name == device {
			continue
		}
		if err := h.LinkSetDown(l); err != nil {
			return fmt.Errorf("setting %s down: %w", l.Attrs().Name, err)
		}
		if err := h.LinkSetName(l, device); err != nil {
			return fmt.Errorf("renaming %s back to %s: %w", l.Attrs().Name, device, err)
		}
		return nil
	}
	return nil
}
