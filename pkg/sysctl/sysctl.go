// Package sysctl reads and writes /proc/sys. Values under /proc/sys/net are
// per network namespace: call these inside netns.NS.Do for a container.
package sysctl

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
func Get(key string) (string, error) {
	b, err := os.ReadFile(Path(key))
	if err != nil {
		return "", fmt.Errorf("sysctl %s: %w", key, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Set writes a sysctl.
func Set(key, value string) error {
	if err := os.WriteFile(Path(key), []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}
