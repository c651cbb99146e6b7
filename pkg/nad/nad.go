// Package nad resolves NetworkAttachmentDefinitions and node CNI config
// files into executable network configurations, as the de-facto standard
// says: the NAD's spec.config when set, else the config file in the CNI
// conf dir whose "name" matches the NAD (conflists before single configs),
// with "name" injected when the config has none.
package nad

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"

	"github.com/knit-cni/knit/pkg/annotations"
	"github.com/knit-cni/knit/pkg/chain"
	"github.com/knit-cni/knit/pkg/cni"
)

// ErrNoConfigFile: no config file in the conf dir has the wanted name.
var ErrNoConfigFile = errors.New("no CNI config file with that network name")

// Network resolves a NAD to its network configuration. defaultVersion is
// used when the config names no cniVersion.
func Network(def *nadv1.NetworkAttachmentDefinition, confDir, defaultVersion string) (*chain.Network, error) {
	ref := def.Namespace + "/" + def.Name
	var data []byte
	if strings.TrimSpace(def.Spec.Config) != "" {
		data = []byte(def.Spec.Config)
	} else {
		b, _, err := FileByName(confDir, def.Name)
		if err != nil {
			return nil, cni.ConfigError("spec.config", "NetworkAttachmentDefinition %s has no config and %w", ref, err)
		}
		data = b
	}
	n, err := chain.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("NetworkAttachmentDefinition %s: spec.config: %w", ref, err)
	}
	if n.Name == "" {
		n.Name = def.Name
	}
	if n.CNIVersion == "" {
		n.CNIVersion = defaultVersion
	}
	return n, nil
}

// ResourceName returns the NAD's device-plugin resource, "" if none.
func ResourceName(def *nadv1.NetworkAttachmentDefinition) string {
	return def.Annotations[annotations.ResourceNameKey]
}

// ConfFiles lists the CNI config files of dir in the order runtimes read
// them (lexical), skipping names in skip.
func ConfFiles(dir string, skip ...string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading CNI conf dir: %w", err)
	}
	var out []string
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || strings.HasPrefix(name, ".") || contains(skip, name) {
			continue
		}
		switch filepath.Ext(name) {
		case ".conflist", ".conf", ".json":
			out = append(out, filepath.Join(dir, name))
		}
	}
	sort.Strings(out)
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// FileByName finds the config in dir whose "name" is name: conflists first,
// then .conf/.json files, each in lexical order. It returns the file's
// content and path.
func FileByName(dir, name string, skip ...string) ([]byte, string, error) {
	files, err := ConfFiles(dir, skip...)
	if err != nil {
		return nil, "", err
	}
	var lists, confs []string
	for _, f := range files {
		if strings.HasSuffix(f, ".conflist") {
			lists = append(lists, f)
		} else {
			confs = append(confs, f)
		}
	}
	for _, f := range append(lists, confs...) {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // removed meanwhile
		}
		var hdr struct {
			Name string `json:"name"`
		}
		if json.Unmarshal(b, &hdr) == nil && hdr.Name == name {
			return b, f, nil
		}
	}
	return nil, "", fmt.Errorf("%w %q in %s", ErrNoConfigFile, name, dir)
}

// LoadFile reads and parses one config file.
func LoadFile(path string) (*chain.Network, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, cni.Errorf(types.ErrIOFailure, "reading %s: %v", path, err)
	}
	n, err := chain.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if n.Name == "" {
		return nil, cni.ConfigError("name", "%s: network config has no name", path)
	}
	return n, nil
}

// DefaultDeviceInfoDir is where device plugins and CNI plugins leave
// device-info files (the standard's §8 paths).
const DefaultDeviceInfoDir = "/var/run/k8s.cni.cncf.io/devinfo"

// DeviceInfoPath is the device plugin's device-info file of a device.
func DeviceInfoPath(dir, resourceName, deviceID string) string {
	return filepath.Join(dir, "dp", fmt.Sprintf("%s-%s-device.json",
		strings.ReplaceAll(resourceName, "/", "-"), strings.ReplaceAll(deviceID, "/", "-")))
}

// LoadDeviceInfo reads the device plugin's device-info of a device.
func LoadDeviceInfo(dir, resourceName, deviceID string) (*nadv1.DeviceInfo, error) {
	b, err := os.ReadFile(DeviceInfoPath(dir, resourceName, deviceID))
	if err != nil {
		return nil, err
	}
	var info nadv1.DeviceInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return nil, fmt.Errorf("device-info of %s %s: %w", resourceName, deviceID, err)
	}
	return &info, nil
}
