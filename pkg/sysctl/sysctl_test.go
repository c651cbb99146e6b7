package sysctl_test

import (
	"errors"
	"io/fs"
	"testing"

	"github.com/knit-cni/knit/pkg/sysctl"
	"github.com/knit-cni/knit/pkg/testutil"
)

// Set and Get round-trip inside a scratch namespace; a key that does not
// exist reports fs.ErrNotExist, which plugins use to skip IPv6 keys when
// IPv6 is off.
func TestSetGet(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	err := ns.Do(func() error {
		for _, v := range []string{"1", "0"} {
			if err := sysctl.Set("net.ipv4.ip_forward", v); err != nil {
				return err
			}
			got, err := sysctl.Get("net/ipv4/ip_forward")
			if err != nil {
				return err
			}
			if got != v {
				t.Errorf("ip_forward = %q after writing %q", got, v)
			}
		}
		if err := sysctl.Set("net/ipv4/conf/nosuchdev0/arp_notify", "1"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("missing key: %v, want fs.ErrNotExist", err)
		}
		if _, err := sysctl.Get("net/ipv4/conf/nosuchdev0/arp_notify"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("missing key read: %v, want fs.ErrNotExist", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
