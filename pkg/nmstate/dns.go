package nmstate

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// applyDNS writes dns-resolver.config to the resolver file. Lists are
// replaced; an empty config removes knit's servers and search domains.
func (e *Engine) applyDNS(d *DNSResolver) error {
	if d == nil || d.Config == nil {
		return nil
	}
	var b strings.Builder
	b.WriteString("# written by knit from a NodeNetworkConfigurationPolicy\n")
	if len(d.Config.Search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(d.Config.Search, " "))
	}
	for _, s := range d.Config.Server {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	return writeFileAtomic(e.resolvConf(), []byte(b.String()))
}

// writeFileAtomic replaces path so readers never see a half-written file.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".knit-"+filepath.Base(path)+"-")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replacing %s: %w", path, err)
	}
	return nil
}
