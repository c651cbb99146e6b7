package hostlocal

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/cni"
)

// flock opens path (creating it with the reference's mode: it uses
// go-filemutex, which creates the lock file 0750) and takes an exclusive
// flock on it, so knit and the reference plugin serialise on the same file.
// Waiting honours ctx; closing the returned file releases the lock.
func flock(ctx context.Context, path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o750)
	if err != nil {
		return nil, fmt.Errorf("opening lock: %w", err)
	}
	fd := int(f.Fd())
	err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		return f, nil
	}
	if !errors.Is(err, unix.EWOULDBLOCK) {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	done := make(chan error, 1)
	go func() { done <- flockWait(fd) }()
	select {
	case err := <-done:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		return f, nil
	case <-ctx.Done():
		// The waiter still owns f: once flock returns, closing f drops the
		// lock it may have just taken.
		go func() {
			<-done
			f.Close()
		}()
		return nil, cni.Errorf(types.ErrTryAgainLater, "waiting for lock %s: %w", path, ctx.Err())
	}
}

func flockWait(fd int) error {
	for {
		err := unix.Flock(fd, unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
