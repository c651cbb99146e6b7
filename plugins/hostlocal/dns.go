package hostlocal

import (
	"bufio"
	"io"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// parseResolvConf reads a resolv.conf into a result's dns, as the
// reference does: nameserver, domain, search and options lines; comments
// (# and ;) and lines without a value are skipped.
func parseResolvConf(r io.Reader) (types.DNS, error) {
	var dns types.DNS
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			dns.Nameservers = append(dns.Nameservers, f[1])
		case "domain":
			dns.Domain = f[1]
		case "search":
			dns.Search = append(dns.Search, f[1:]...)
		case "options":
			dns.Options = append(dns.Options, f[1:]...)
		}
	}
	return dns, sc.Err()
}
