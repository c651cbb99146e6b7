// Package sysctl reads and writes /proc/sys. Values under /proc/sys/net are
// per network namespace: call these inside netns.NS.Do for a container.
package sysctl

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Path turns "net.ipv4.ip_forward" or "net/ipv4/ip_forward" into its file.
// Dots inside interface names must be written with '/' separators.
func Path(key string) string {
	if strings.Contains(key, "/") {
		return filepath.Join("/proc/sys", key)
	}
	return filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
}

// Get returns a sysctl's value without the trailing newline.
//
// Get and Set use plain system calls: package os would try to register
// each /proc file with its poller (four fcntl and an epoll_ctl per open),
// and a pod's ADD writes a dozen sysctls.
func Get(key string) (string, error) {
	fd, err := open(key, unix.O_RDONLY)
	if err != nil {
		return "", fmt.Errorf("sysctl %s: %w", key, err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 256)
	var out []byte
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("sysctl %s: %w", key, &os.PathError{Op: "read", Path: Path(key), Err: err})
		}
		if n == 0 {
			return strings.TrimSpace(string(out)), nil
		}
		out = append(out, buf[:n]...)
	}
}

// Set writes a sysctl.
func Set(key, value string) error {
	fd, err := open(key, unix.O_WRONLY)
	if err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	_, err = unix.Write(fd, []byte(value))
	for err == unix.EINTR {
		_, err = unix.Write(fd, []byte(value))
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, &os.PathError{Op: "write", Path: Path(key), Err: err})
	}
	return nil
}

// open returns the sysctl's file descriptor; errors are *os.PathError, so
// callers can test them with errors.Is (fs.ErrNotExist, unix.ENOENT).
func open(key string, flags int) (int, error) {
	path := Path(key)
	for {
		fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return fd, nil
	}
}
