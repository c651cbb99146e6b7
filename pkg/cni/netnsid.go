package cni

import (
	"fmt"
	"runtime"

	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"
)

// NetnsID identifies a network namespace: the device and inode of its
// nsfs file, the same whichever path names it.
type NetnsID struct{ dev, ino uint64 }

// NetnsIDOf returns the identity of the namespace at path.
func NetnsIDOf(path string) (NetnsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return NetnsID{}, err
	}
	return NetnsID{dev: st.Dev, ino: st.Ino}, nil
}

// OwnNetnsID returns the identity of the calling thread's namespace.
// /proc/self/ns/net would name the main thread's, which a daemon switching
// locked threads into containers cannot vouch for.
func OwnNetnsID() (NetnsID, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return NetnsIDOf("/proc/thread-self/ns/net")
}

// CheckNetns refuses a request whose CNI_NETNS is the namespace own (the
// plugin's: the host's), as skel does, unless CNI_NETNS_OVERRIDE says the
// caller means it: plugins would move and rename the host's links. A
// namespace that cannot be examined is left to the call (DEL must succeed
// when it is gone; ADD reports it).
func CheckNetns(req *Request, own NetnsID) error {
	if req.Netns == "" || req.NetnsOverride {
		return nil
	}
	switch req.Command {
	case CmdAdd, CmdDel, CmdCheck:
	default:
		return nil
	}
	if id, err := NetnsIDOf(req.Netns); err == nil && id == own {
		return Errorf(types.ErrInvalidNetNS, "CNI_NETNS %s is the host's network namespace, not a container's", req.Netns)
	}
	return nil
}

// String is for logs.
func (id NetnsID) String() string { return fmt.Sprintf("net:[%d] on dev %d", id.ino, id.dev) }
