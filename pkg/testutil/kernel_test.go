package testutil

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// fakeTB records Fatalf/Skipf and ends the calling goroutine like the real
// ones; run calls f on a goroutine of its own for that.
type fakeTB struct {
	testing.TB
	fatal, skip string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (f *fakeTB) Skipf(format string, args ...any) {
	f.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (f *fakeTB) run(fn func(testing.TB)) *fakeTB {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f
}

func TestRequireKernelFeatureUnknown(t *testing.T) {
	for _, inLane := range []bool{false, true} {
		f := (&fakeTB{TB: t}).run(func(tb testing.TB) {
			requireKernelFeature(tb, "bogus-feature", newProbeCache(func(string) error {
				t.Error("probe called for an unknown feature")
				return nil
			}), inLane)
		})
		if !strings.Contains(f.fatal, "unknown kernel feature") || f.skip != "" {
			t.Errorf("inLane=%v: fatal=%q skip=%q, want an unknown-feature failure", inLane, f.fatal, f.skip)
		}
	}
	if err := ProbeKernelFeature("bogus-feature"); !errors.Is(err, ErrUnknownKernelFeature) {
		t.Errorf("ProbeKernelFeature(bogus) = %v, want ErrUnknownKernelFeature", err)
	}
}

func TestRequireKernelFeatureMissing(t *testing.T) {
	missing := newProbeCache(func(string) error {
		return fmt.Errorf("%w: creating ipvlan link: operation not supported", ErrKernelFeatureMissing)
	})
	host := (&fakeTB{TB: t}).run(func(tb testing.TB) { requireKernelFeature(tb, "ipvlan", missing, false) })
	if host.fatal != "" || !strings.Contains(host.skip, "kernel lacks ipvlan: this test runs in the full-kernel lane (make test-kernel)") {
		t.Errorf("host: fatal=%q skip=%q, want a skip pointing at the lane", host.fatal, host.skip)
	}
	lane := (&fakeTB{TB: t}).run(func(tb testing.TB) { requireKernelFeature(tb, "ipvlan", missing, true) })
	if lane.skip != "" || !strings.Contains(lane.fatal, "ipvlan") {
		t.Errorf("lane: fatal=%q skip=%q, want a failure", lane.fatal, lane.skip)
	}

	// A probe that could not run at all (not a missing feature) skips on
	// the host and fails in the lane too.
	broken := newProbeCache(func(string) error { return errors.New("permission denied") })
	host = (&fakeTB{TB: t}).run(func(tb testing.TB) { requireKernelFeature(tb, "dummy", broken, false) })
	if host.fatal != "" || !strings.Contains(host.skip, "cannot probe") {
		t.Errorf("host, broken probe: fatal=%q skip=%q", host.fatal, host.skip)
	}
	lane = (&fakeTB{TB: t}).run(func(tb testing.TB) { requireKernelFeature(tb, "dummy", broken, true) })
	if lane.skip != "" || lane.fatal == "" {
		t.Errorf("lane, broken probe: fatal=%q skip=%q", lane.fatal, lane.skip)
	}

	ok := newProbeCache(func(string) error { return nil })
	for _, inLane := range []bool{false, true} {
		f := (&fakeTB{TB: t}).run(func(tb testing.TB) { requireKernelFeature(tb, "vrf", ok, inLane) })
		if f.fatal != "" || f.skip != "" {
			t.Errorf("supported, inLane=%v: fatal=%q skip=%q", inLane, f.fatal, f.skip)
		}
	}
}

func TestProbeCacheMemoizes(t *testing.T) {
	var calls atomic.Int32
	c := newProbeCache(func(f string) error {
		calls.Add(1)
		if f == "bond" {
			return ErrKernelFeatureMissing
		}
		return nil
	})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, f := range []string{"bond", "veth", "bond", "veth"} {
				err := c.get(f)
				if (f == "bond") != (err != nil) {
					t.Errorf("get(%s) = %v", f, err)
				}
			}
		}()
	}
	wg.Wait()
	if n := calls.Load(); n != 2 {
		t.Errorf("probe ran %d times, want 2 (once per feature)", n)
	}
}

// veth and bridge are in every kernel knit supports, the host's included:
// their probes must pass and RequireKernelFeature must not skip.
func TestKernelFeatureBasics(t *testing.T) {
	RequireRoot(t)
	for _, feature := range []string{"veth", "bridge"} {
		if err := ProbeKernelFeature(feature); err != nil {
			t.Errorf("ProbeKernelFeature(%s) = %v", feature, err)
		}
		f := (&fakeTB{TB: t}).run(func(tb testing.TB) { RequireKernelFeature(tb, feature) })
		if f.fatal != "" || f.skip != "" {
			t.Errorf("RequireKernelFeature(%s): fatal=%q skip=%q", feature, f.fatal, f.skip)
		}
	}
}

// TestKernelFeatures probes every known feature for real: on the host the
// missing ones skip; in the full-kernel lane all of them must be there.
func TestKernelFeatures(t *testing.T) {
	RequireRoot(t)
	for _, feature := range KernelFeatures() {
		t.Run(feature, func(t *testing.T) {
			RequireKernelFeature(t, feature)
			if err := ProbeKernelFeature(feature); err != nil {
				t.Fatalf("probe after Require: %v", err)
			}
		})
	}
}
