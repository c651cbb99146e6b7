package bandwidth

import (
	"math"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/cni"
)

// Entry is one set of limits, as in the bandwidth capability convention:
// rates in bits per second, bursts in bits. A zero pair is no limit.
type Entry struct {
	IngressRate  uint64 `json:"ingressRate"`
	IngressBurst uint64 `json:"ingressBurst"`
	EgressRate   uint64 `json:"egressRate"`
	EgressBurst  uint64 `json:"egressBurst"`
	// The reference (1.5+) can exempt or select subnets with HTB; knit's
	// TBF shaping applies to all traffic and rejects these when set.
	UnshapedSubnets []string `json:"unshapedSubnets,omitempty"`
	ShapedSubnets   []string `json:"shapedSubnets,omitempty"`
}

func (e *Entry) isZero() bool {
	return e.IngressRate == 0 && e.IngressBurst == 0 && e.EgressRate == 0 && e.EgressBurst == 0
}

// Config is bandwidth's config, keyed as containernetworking/plugins'.
type Config struct {
	cni.NetConf
	RuntimeConfig struct {
		Bandwidth *Entry `json:"bandwidth,omitempty"`
	} `json:"runtimeConfig,omitempty"`
	*Entry
}

func parse(data []byte) (*Config, error) {
	var c Config
	if err := cni.ParseConfig(data, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// limits returns the limits in force, validated; nil means none. Limits
// in the config itself win over runtimeConfig, as in the reference.
func (c *Config) limits() (*Entry, error) {
	e, where := c.Entry, ""
	if e == nil {
		e, where = c.RuntimeConfig.Bandwidth, "runtimeConfig.bandwidth."
	}
	if e == nil {
		return nil, nil
	}
	if err := checkPair(where+"ingress", e.IngressRate, e.IngressBurst); err != nil {
		return nil, err
	}
	if err := checkPair(where+"egress", e.EgressRate, e.EgressBurst); err != nil {
		return nil, err
	}
	if len(e.UnshapedSubnets) > 0 || len(e.ShapedSubnets) > 0 {
		return nil, cni.Errorf(types.ErrUnsupportedField,
			"%sunshapedSubnets/shapedSubnets: per-subnet shaping is not supported; knit shapes all traffic", where)
	}
	if e.isZero() {
		return nil, nil
	}
	return e, nil
}

// checkPair validates a rate and burst the way TBF needs them: both or
// neither, a rate of at least one byte per second, a burst below 4 GiB,
// and a burst that the rate drains in a time the kernel can express.
func checkPair(dir string, rate, burst uint64) error {
	switch {
	case rate == 0 && burst == 0:
		return nil
	case burst == 0:
		return cni.ConfigError(dir+"Burst", "must be set when %sRate is", dir)
	case rate == 0:
		return cni.ConfigError(dir+"Rate", "must be set when %sBurst is", dir)
	case rate < 8:
		return cni.ConfigError(dir+"Rate", "%d bit/s is below the minimum of 8", rate)
	case burst/8 >= math.MaxUint32:
		return cni.ConfigError(dir+"Burst", "cannot be 4 GiB or more")
	}
	if _, ok := bufferTicks(rate/8, burst/8); !ok {
		return cni.ConfigError(dir+"Burst", "%d bits take too long to drain at %d bit/s", burst, rate)
	}
	return nil
}

// bufferTicks is TBF's bucket size: the time, in scheduler ticks, the
// rate (bytes/s) needs to send burst bytes. ok is false on overflow.
func bufferTicks(rate, burst uint64) (uint32, bool) {
	if rate == 0 {
		return 0, false
	}
	usec := float64(burst) * float64(netlink.TIME_UNITS_PER_SEC) / float64(rate)
	ticks := usec * netlink.TickInUsec()
	if usec >= math.MaxUint32 || ticks >= math.MaxUint32 {
		return 0, false
	}
	return uint32(ticks), true
}

// latencyUsec bounds queueing in TBF: the queue holds what the rate sends
// in this time on top of the burst (the reference's 25 ms).
const latencyUsec = 25_000

// limitBytes is TBF's queue limit for a rate and burst in bytes.
func limitBytes(rate, burst uint64) uint32 {
	l := float64(rate)*latencyUsec/float64(netlink.TIME_UNITS_PER_SEC) + float64(burst)
	if l >= math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(l)
}
