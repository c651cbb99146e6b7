// Package attachcache is the node's per-container record of what knit
// attached: for each attachment the resolved network config (with the
// runtimeConfig it was given) and its ADD result. knitd writes it atomically
// before and after an ADD; DEL, CHECK and GC read it, so DEL works with the
// API server down and, through the knit shim, with knitd down too.
package attachcache

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// FormatVersion is the version of the on-disk format.
const FormatVersion = 1

// Entry is everything knit did for one (container, runtime interface).
type Entry struct {
	Version     int    `json:"version"`
	ContainerID string `json:"containerID"`
	// IfName is the interface name the runtime asked for (the cluster
	// network's, normally eth0).
	IfName string   `json:"ifname"`
	Netns  string   `json:"netns,omitempty"`
	Args   string   `json:"cniArgs,omitempty"`
	Path   []string `json:"cniPath,omitempty"`

	PodNamespace string `json:"podNamespace,omitempty"`
	PodName      string `json:"podName,omitempty"`
	PodUID       string `json:"podUID,omitempty"`

	Created time.Time `json:"created"`
	// Complete is false while an ADD is in progress (or was interrupted):
	// the attachments listed may exist partly or not at all.
	Complete    bool         `json:"complete"`
	Attachments []Attachment `json:"attachments"`
}

// Attachment is one network attached to the container.
type Attachment struct {
	// Network names the network: "namespace/name" for a NAD, the config's
	// name for a file.
	Network string `json:"network"`
	IfName  string `json:"ifname"`
	// Default marks the cluster network.
	Default bool `json:"default,omitempty"`
	// Config is the network in conflist form, as executed.
	Config json.RawMessage `json:"config"`
	// RuntimeConfig is what the attachment's plugins were offered.
	RuntimeConfig map[string]any `json:"runtimeConfig,omitempty"`
	// Result is the ADD result in the network's cniVersion; empty until
	// the attachment's ADD succeeded.
	Result json.RawMessage `json:"result,omitempty"`
	// DeviceID is the device-plugin device given to the attachment.
	DeviceID     string `json:"deviceID,omitempty"`
	ResourceName string `json:"resourceName,omitempty"`
	// GatewayRequest holds the annotation's default-route gateways.
	GatewayRequest []string `json:"defaultRoute,omitempty"`
}

// Store is a cache directory.
type Store struct {
	Dir string
}

// key is the file stem of an entry. Container IDs cannot contain ':' (CNI
// restricts them to [a-zA-Z0-9_.-]) and interface names cannot either, so
// the pair maps to one name.
func key(containerID, ifName string) (string, error) {
	if containerID == "" || strings.ContainsAny(containerID, "/:") || containerID[0] == '.' {
		return "", fmt.Errorf("invalid container ID %q", containerID)
	}
	if ifName == "" || strings.ContainsAny(ifName, "/:") || ifName == "." || ifName == ".." {
		return "", fmt.Errorf("invalid interface name %q", ifName)
	}
	return containerID + ":" + ifName, nil
}

func (s *Store) path(containerID, ifName, ext string) (string, error) {
	k, err := key(containerID, ifName)
	if err != nil {
		return "", err
	}
	return filepath.Join(s.Dir, k+ext), nil
}

// Read returns the entry of an attachment; the error wraps os.ErrNotExist
// when there is none.
func (s *Store) Read(containerID, ifName string) (*Entry, error) {
	p, err := s.path(containerID, ifName, ".json")
	if err != nil {
		return nil, err
	}
	return readFile(p)
}

func readFile(p string) (*Entry, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("reading cache: %w", err)
	}
	var e Entry
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("cache file %s: %w", p, err)
	}
	if e.Version != FormatVersion {
		return nil, fmt.Errorf("cache file %s: format version %d, want %d", p, e.Version, FormatVersion)
	}
	return &e, nil
}

// Write stores e atomically (temp file + rename): a reader sees the old or
// the new entry, never a torn one, also when knitd dies mid-write. It does
// not fsync: that costs milliseconds per ADD on a disk, and what a power
// loss could lose (the last entries) goes with the pods' namespaces anyway
// — the runtime's GC and knitd's sweep collect what is left.
func (s *Store) Write(e *Entry) error {
	e.Version = FormatVersion
	p, err := s.path(e.ContainerID, e.IfName, ".json")
	if err != nil {
		return err
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encoding cache entry: %w", err)
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return fmt.Errorf("cache dir: %w", err)
	}
	return writeAtomic(p, b)
}

func writeAtomic(p string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-")
	if err != nil {
		return fmt.Errorf("writing cache: %w", err)
	}
	tmp := f.Name()
	_, werr := f.Write(b)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, p)
	}
	if werr != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing cache %s: %w", p, werr)
	}
	return nil
}

// Remove deletes an entry; a missing one is not an error.
func (s *Store) Remove(containerID, ifName string) error {
	p, err := s.path(containerID, ifName, ".json")
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing cache: %w", err)
	}
	return nil
}

// List returns every readable entry. Unreadable files are reported in the
// error (joined) but do not hide the others.
func (s *Store) List() ([]*Entry, error) {
	names, err := filepath.Glob(filepath.Join(s.Dir, "*.json"))
	if err != nil {
		return nil, err
	}
	var out []*Entry
	var errs []error
	for _, n := range names {
		e, err := readFile(n)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) { // removed while listing
				errs = append(errs, err)
			}
			continue
		}
		out = append(out, e)
	}
	return out, errors.Join(errs...)
}

// Lock takes the exclusive lock of an attachment (an flock on a lock file
// beside the entry), shared by knitd and the knit shim so that a DEL from
// the shim never races one in knitd. The returned function releases it;
// with remove set it also deletes the lock file (after a final DEL).
func (s *Store) Lock(containerID, ifName string) (unlock func(remove bool), err error) {
	p, err := s.path(containerID, ifName, ".lock")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("cache dir: %w", err)
	}
	for {
		fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", p, err)
		}
		if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("lock %s: %w", p, err)
		}
		// The holder before us may have removed the file: then our lock
		// is on an orphaned inode and we must take the new file's.
		var held, cur unix.Stat_t
		if unix.Fstat(fd, &held) == nil && unix.Stat(p, &cur) == nil && held.Ino == cur.Ino && held.Dev == cur.Dev {
			return func(remove bool) {
				if remove {
					os.Remove(p)
				}
				unix.Close(fd) // closing releases the flock
			}, nil
		}
		unix.Close(fd)
	}
}
