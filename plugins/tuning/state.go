package tuning

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/knit-cni/knit/pkg/cni"
)

// saved is what an ADD changed, with the values from before, so DEL can
// put them back. Only the attributes the ADD touched are set.
type saved struct {
	ContainerID string        `json:"containerID"`
	IfName      string        `json:"ifName"`
	Mac         string        `json:"mac,omitempty"`
	Mtu         int           `json:"mtu,omitempty"`
	TxQLen      *int          `json:"txQLen,omitempty"`
	Promisc     *bool         `json:"promisc,omitempty"`
	Allmulti    *bool         `json:"allmulti,omitempty"`
	Sysctls     []savedSysctl `json:"sysctls,omitempty"`
}

type savedSysctl struct {
	Path  string `json:"path"` // below /proc/sys
	Value string `json:"value"`
}

// stateFile names an attachment's file. Container IDs cannot contain ':'
// (the spec allows [a-zA-Z0-9_.-]), so the name is unambiguous whatever
// the interface is called.
func stateFile(dir, containerID, ifName string) (string, error) {
	if containerID == "" || strings.ContainsAny(containerID, ":/") || ifName == "" || strings.Contains(ifName, "/") {
		return "", cni.Errorf(types.ErrInvalidEnvironmentVariables, "invalid container ID %q or interface %q for a state file", containerID, ifName)
	}
	return filepath.Join(dir, containerID+":"+ifName+".json"), nil
}

func writeState(path string, s *saved) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("creating tuning state dir: %w", err)
	}
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	// Write and rename, so a crash never leaves a half-written file that
	// DEL could not read.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("saving tuning state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("saving tuning state: %w", err)
	}
	return nil
}

// readState returns nil, nil when there is no file.
func readState(path string) (*saved, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading tuning state: %w", err)
	}
	var s saved
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("tuning state %s is corrupt: %w", path, err)
	}
	return &s, nil
}

func removeState(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing tuning state: %w", err)
	}
	return nil
}
