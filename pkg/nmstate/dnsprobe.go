package nmstate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// DNSProbe asks the servers a desired state configures for the root's NS
// records: any answer (even a refusal) shows the resolver is reachable. It
// probes only those servers — never ones the node had before — and is used
// only when the desired state sets dns-resolver servers.
func (e *Engine) DNSProbe(d *State, timeout time.Duration) (Probe, bool) {
	if d.DNSResolver == nil || d.DNSResolver.Config == nil || len(d.DNSResolver.Config.Server) == 0 {
		return Probe{}, false
	}
	servers := d.DNSResolver.Config.Server
	return Probe{Name: "dns", Run: func(ctx context.Context) error {
		var errs []error
		for _, s := range servers {
			err := e.queryDNS(ctx, s, timeout)
			if err == nil {
				return nil
			}
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}}, true
}

func (e *Engine) queryDNS(ctx context.Context, server string, timeout time.Duration) error {
	ip := net.ParseIP(server)
	if ip == nil {
		return fmt.Errorf("dns server %q is not an IP", server)
	}
	q := dnsmessage.Message{Header: dnsmessage.Header{ID: 0x6b6e, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("."), Type: dnsmessage.TypeNS, Class: dnsmessage.ClassINET}}}
	packet, err := q.Pack()
	if err != nil {
		return err
	}
	var conn net.Conn
	// The socket belongs to the engine's namespace (the node's).
	err = e.NS.Do(func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, "udp", net.JoinHostPort(ip.String(), "53"))
		return err
	})
	if err != nil {
		return fmt.Errorf("dns %s: %w", server, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write(packet); err != nil {
		return fmt.Errorf("dns %s: %w", server, err)
	}
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	if err != nil {
		return fmt.Errorf("dns %s did not answer within %s: %w", server, timeout, err)
	}
	var m dnsmessage.Message
	if err := m.Unpack(buf[:n]); err != nil || m.Header.ID != q.Header.ID || !m.Header.Response {
		return fmt.Errorf("dns %s: not a DNS answer", server)
	}
	return nil
}
