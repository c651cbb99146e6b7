package hostlocal

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The on-disk layout is the reference plugin's, byte for byte, so that a
// node can switch between the two (or run both) on one directory:
// <dataDir>/<network>/<ip> holds "<containerID>\r\n<ifname>",
// last_reserved_ip.<range set index> the last address handed out from that
// set, and lock is flock'ed around every operation.
const (
	lockName     = "lock"
	lastIPPrefix = "last_reserved_ip."
	lineBreak    = "\r\n"
)

// ownerKey is the content of an IP file written for an attachment, as the
// reference compares it (trimmed).
func ownerKey(cid, ifname string) string { return strings.TrimSpace(cid) + lineBreak + ifname }

// legacyKey is the content of IP files written by host-local before 0.7,
// which recorded only the container ID.
func legacyKey(cid string) string { return strings.TrimSpace(cid) }

// store is one network's directory, held under its lock for the length of
// one operation.
type store struct {
	dir  string
	lock *os.File
	// dirty is set when the directory or the index changed, so that close
	// records a new validity stamp for the index.
	dirty bool
	// indexOK is set once the index has been checked (or rebuilt) in this
	// operation.
	indexOK bool
}

// openStore locks the network's directory. With create false a missing
// directory is not created and (nil, nil) is returned: there is nothing
// to release or check.
func openStore(ctx context.Context, dataDir, network string, create bool) (*store, error) {
	dir := filepath.Join(dataDir, network)
	if create {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("creating %s: %w", dir, err)
		}
	} else if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	lk, err := flock(ctx, filepath.Join(dir, lockName))
	if err != nil {
		return nil, err
	}
	return &store{dir: dir, lock: lk}, nil
}

// close records the index stamp if anything changed and drops the lock. A
// failed stamp is not an error of the operation: the allocation on disk is
// complete, and the next operation rebuilds the index by one scan.
func (s *store) close() {
	if s.dirty {
		_ = s.restamp()
	}
	s.lock.Close()
}

func (s *store) ipPath(ip netip.Addr) string { return filepath.Join(s.dir, ip.String()) }

// reserve creates ip's file for owner if nobody holds it (O_EXCL: the file
// is the truth about who holds an address) and records it as the set's
// last reserved address. It reports false when the address is taken.
func (s *store) reserve(ip netip.Addr, owner string, set int) (bool, error) {
	path := s.ipPath(ip)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_EXCL|os.O_CREATE, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reserving %s: %w", ip, err)
	}
	s.dirty = true
	_, werr := f.WriteString(owner)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = overwriteFile(filepath.Join(s.dir, lastIPPrefix+strconv.Itoa(set)), []byte(ip.String()))
	}
	if werr != nil {
		os.Remove(path)
		return false, fmt.Errorf("reserving %s: %w", ip, werr)
	}
	return true, nil
}

// owner returns the trimmed content of ip's file, "" when it does not exist.
func (s *store) owner(ip netip.Addr) (string, error) {
	data, err := os.ReadFile(s.ipPath(ip))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", ip, err)
	}
	return strings.TrimSpace(string(data)), nil
}

// releaseIfOwned removes ip's file when owner holds it. It reports whether
// a file was removed.
func (s *store) releaseIfOwned(ip netip.Addr, owner string) (bool, error) {
	got, err := s.owner(ip)
	if err != nil || got != owner {
		return false, err
	}
	return s.remove(ip)
}

func (s *store) remove(ip netip.Addr) (bool, error) {
	err := os.Remove(s.ipPath(ip))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("releasing %s: %w", ip, err)
	}
	s.dirty = true
	return true, nil
}

// lastReserved reads last_reserved_ip.<set>; an unreadable or missing file
// only costs the round-robin position, as in the reference.
func (s *store) lastReserved(set int) netip.Addr {
	data, err := os.ReadFile(filepath.Join(s.dir, lastIPPrefix+strconv.Itoa(set)))
	if err != nil {
		return netip.Addr{}
	}
	ip, err := netip.ParseAddr(strings.TrimSpace(string(data)))
	if err != nil {
		return netip.Addr{}
	}
	return ip.Unmap()
}

// ipNames lists the addresses that have a file, without reading them.
func (s *store) ipNames() (map[netip.Addr]bool, error) {
	ents, err := readDir(s.dir)
	if err != nil {
		return nil, err
	}
	out := make(map[netip.Addr]bool, len(ents))
	for _, e := range ents {
		if ip, ok := ipName(e); ok {
			out[ip] = true
		}
	}
	return out, nil
}

// scan reads every address file: the reference's full walk, done only to
// rebuild the index and for GC.
func (s *store) scan() (map[netip.Addr]string, error) {
	ents, err := readDir(s.dir)
	if err != nil {
		return nil, err
	}
	out := make(map[netip.Addr]string, len(ents))
	for _, e := range ents {
		ip, ok := ipName(e)
		if !ok {
			continue
		}
		owner, err := s.owner(ip)
		if err != nil {
			return nil, err
		}
		out[ip] = owner
	}
	return out, nil
}

func readDir(dir string) ([]fs.DirEntry, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	defer f.Close()
	ents, err := f.ReadDir(-1) // unsorted: the order does not matter here
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	return ents, nil
}

// ipName reports whether a directory entry is an address file. Names are
// written by net.IP.String in the reference and netip.Addr.String here,
// which agree.
func ipName(e fs.DirEntry) (netip.Addr, bool) {
	if !e.Type().IsRegular() {
		return netip.Addr{}, false
	}
	ip, err := netip.ParseAddr(e.Name())
	if err != nil || ip.Zone() != "" || ip.String() != e.Name() {
		return netip.Addr{}, false
	}
	return ip, true
}
