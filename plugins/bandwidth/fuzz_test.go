package bandwidth

import "testing"

func FuzzConfig(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","type":"bandwidth","ingressRate":8000000,"ingressBurst":400000,"egressRate":4000000,"egressBurst":200000}`))
	f.Add([]byte(`{"cniVersion":"0.3.1","name":"n","type":"bandwidth","runtimeConfig":{"bandwidth":{"egressRate":16,"egressBurst":1}}}`))
	f.Add([]byte(`{"cniVersion":"1.1.0","ingressRate":1,"ingressBurst":34359738360,"shapedSubnets":["10.0.0.0/8"]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parse(data)
		if err != nil {
			return
		}
		lim, err := c.limits()
		if err != nil || lim == nil {
			return
		}
		for _, p := range [][2]uint64{{lim.IngressRate, lim.IngressBurst}, {lim.EgressRate, lim.EgressBurst}} {
			rate, burst := p[0], p[1]
			if (rate == 0) != (burst == 0) {
				t.Fatalf("accepted rate %d with burst %d", rate, burst)
			}
			if rate == 0 {
				continue
			}
			if _, ok := bufferTicks(rate/8, burst/8); !ok || rate < 8 {
				t.Fatalf("accepted rate %d burst %d that TBF cannot express", rate, burst)
			}
			if limitBytes(rate/8, burst/8) < uint32(burst/8) {
				t.Fatalf("queue limit below the burst for %d/%d", rate, burst)
			}
		}
	})
}
