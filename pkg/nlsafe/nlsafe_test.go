package nlsafe

import (
	"errors"
	"testing"

	"github.com/vishvananda/netlink"
)

// An interrupted dump is repeated until one completes; one that is always
// interrupted gives up with the error; other errors are not retried.
func TestRetry(t *testing.T) {
	calls := 0
	got, err := retry(func() (int, error) {
		calls++
		if calls < 3 {
			return -1, netlink.ErrDumpInterrupted
		}
		return 42, nil
	})
	if got != 42 || err != nil || calls != 3 {
		t.Errorf("got %d %v after %d calls, want 42 after 3", got, err, calls)
	}
	calls = 0
	_, err = retry(func() (int, error) { calls++; return 0, netlink.ErrDumpInterrupted })
	if !errors.Is(err, netlink.ErrDumpInterrupted) || calls != attempts {
		t.Errorf("always interrupted: %v after %d calls, want the error after %d", err, calls, attempts)
	}
	calls = 0
	boom := errors.New("boom")
	_, err = retry(func() (int, error) { calls++; return 0, boom })
	if err != boom || calls != 1 {
		t.Errorf("other error: %v after %d calls", err, calls)
	}
}
