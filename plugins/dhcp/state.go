package dhcp

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/knit-cni/knit/pkg/dhcpclient"
)

// savedLease is a lease on disk, so a restarted daemon keeps renewing the
// leases containers still use (the reference forgets them: their
// addresses expire on the server while the containers keep using them).
type savedLease struct {
	ID          string        `json:"id"`
	Network     string        `json:"network"`
	ContainerID string        `json:"containerID"`
	IfName      string        `json:"ifName"`
	Netns       string        `json:"netns"`
	Request     []uint8       `json:"request,omitempty"`
	Provide     []savedOption `json:"provide,omitempty"`
	Offer       []byte        `json:"offer"`
	ACK         []byte        `json:"ack"`
	RenewAt     time.Time     `json:"renewAt"`
	RebindAt    time.Time     `json:"rebindAt"`
	ExpireAt    time.Time     `json:"expireAt"`
}

type savedOption struct {
	Code  uint8  `json:"code"`
	Value []byte `json:"value"`
}

// stateFile names a lease's file: client IDs contain '/'.
func stateFile(dir, id string) string {
	sum := sha256.Sum256([]byte(id))
	return filepath.Join(dir, hex.EncodeToString(sum[:16])+".json")
}

// save writes the lease (no-op without a state directory).
func (d *Daemon) save(l *lease) error {
	if d.stateDir == "" {
		return nil
	}
	cur, ok := l.Save()
	if !ok {
		return nil
	}
	s := savedLease{ID: l.id, Network: l.network, ContainerID: l.containerID, IfName: l.ifName, Netns: l.netns,
		Offer: cur.Offer.ToBytes(), ACK: cur.ACK.ToBytes(), RenewAt: cur.Renew, RebindAt: cur.Rebind, ExpireAt: cur.Expire}
	for _, c := range l.opts.request {
		s.Request = append(s.Request, c.Code())
	}
	for _, o := range l.opts.provide {
		s.Provide = append(s.Provide, savedOption{Code: o.Code.Code(), Value: o.Value.ToBytes()})
	}
	data, err := json.Marshal(&s)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(d.stateDir, 0o700); err != nil {
		return fmt.Errorf("dhcp state dir: %w", err)
	}
	path := stateFile(d.stateDir, l.id)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("saving lease: %w", err)
	}
	return os.Rename(tmp, path)
}

// forget removes the lease's file.
func (d *Daemon) forget(l *lease) {
	if d.stateDir == "" {
		return
	}
	if err := os.Remove(stateFile(d.stateDir, l.id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		d.log.Warn("removing saved lease", "client", l.id, "err", err)
	}
}

// Restore takes up the leases a previous daemon saved: those whose
// namespace and interface still exist and that have not expired are
// maintained again; the rest are dropped. It returns how many it resumed.
func (d *Daemon) Restore() (int, error) {
	if d.stateDir == "" {
		return 0, nil
	}
	entries, err := os.ReadDir(d.stateDir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading dhcp state: %w", err)
	}
	n := 0
	for _, e := range entries {
		path := filepath.Join(d.stateDir, e.Name())
		if !strings.HasSuffix(e.Name(), ".json") {
			_ = os.Remove(path) // an interrupted write
			continue
		}
		l, err := d.load(path)
		if err != nil {
			d.log.Info("dropping saved lease", "file", path, "reason", err)
			_ = os.Remove(path)
			continue
		}
		d.mu.Lock()
		d.leases[l.id] = l
		d.mu.Unlock()
		d.start(l)
		d.log.Info("lease restored", "client", l.id, "ip", l.Address(), "expires", l.Times().Expire)
		n++
	}
	return n, nil
}

// load reads a saved lease and checks it is still worth keeping.
func (d *Daemon) load(path string) (*lease, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s savedLease
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("corrupt: %w", err)
	}
	offer, err := dhcpv4.FromBytes(s.Offer)
	if err != nil {
		return nil, fmt.Errorf("offer: %w", err)
	}
	ack, err := dhcpv4.FromBytes(s.ACK)
	if err != nil {
		return nil, fmt.Errorf("ack: %w", err)
	}
	if time.Now().After(s.ExpireAt) {
		return nil, errors.New("expired")
	}
	opts := &options{}
	for _, c := range s.Request {
		opts.request = append(opts.request, dhcpv4.GenericOptionCode(c))
	}
	for _, o := range s.Provide {
		opts.provide = append(opts.provide, dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(o.Code), o.Value))
	}
	saved := &dhcpclient.Saved{Offer: offer, ACK: ack, Times: dhcpclient.Times{Renew: s.RenewAt, Rebind: s.RebindAt, Expire: s.ExpireAt}}
	l := newLease(s.ID, s.Network, s.ContainerID, s.IfName, s.Netns, opts, d.broadcast, d.log, saved)
	if err := l.exists(); err != nil {
		return nil, err
	}
	return l, nil
}
