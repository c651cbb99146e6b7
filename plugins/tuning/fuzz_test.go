package tuning

import (
	"encoding/json"
	"strings"
	"testing"
)

func FuzzConfig(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","type":"tuning","sysctl":{"net.ipv4.conf.IFNAME.arp_ignore":"1","net/core/somaxconn":"5"},"mac":"02:00:00:00:00:01","mtu":1400,"txQLen":5,"allmulti":true,"promisc":true}`), "eth0", "IgnoreUnknown=1;MAC=02:00:00:00:00:02")
	f.Add([]byte(`{"cniVersion":"0.3.1","name":"n","type":"tuning","args":{"cni":{"sysctl":{"net.core.somaxconn":"9"},"mtu":9000}},"runtimeConfig":{"mac":"c2:b0:57:49:47:f1"}}`), "net1.5", "")
	f.Add([]byte(`{"cniVersion":"1.1.0","sysctl":{"net.ipv4.conf.eth0/5.x":"1","net/../kernel/x":"1","net.a":"1","net.a":"2"}}`), "a", "MAC=zz")
	f.Fuzz(func(t *testing.T, data []byte, ifName, args string) {
		c, err := parse(data)
		if err != nil {
			return
		}
		if strings.ContainsAny(ifName, "/\x00") || ifName == "" || ifName == "." || ifName == ".." {
			return // CNI_IFNAME rules, enforced by skel before any plugin runs
		}
		s, err := c.resolve(args, ifName, nil)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, sc := range s.sysctls {
			if !strings.HasPrefix(sc.path, "net/") {
				t.Fatalf("key %q resolved outside net: %q", sc.key, sc.path)
			}
			for _, part := range strings.Split(sc.path, "/") {
				if part == "" || part == "." || part == ".." {
					t.Fatalf("key %q resolved to unsafe path %q", sc.key, sc.path)
				}
			}
			if seen[sc.path] {
				t.Fatalf("two settings for %q", sc.path)
			}
			seen[sc.path] = true
		}
		if s.mtu < 0 || (s.txQLen != nil && *s.txQLen < 0) {
			t.Fatalf("negative mtu/txQLen accepted: %+v", s)
		}
		// Sysctls survive a round trip in order.
		out, err := json.Marshal(c.SysCtl)
		if err != nil {
			t.Fatal(err)
		}
		var back Sysctls
		if err := json.Unmarshal(out, &back); err != nil || len(back) != len(c.SysCtl) {
			t.Fatalf("round trip of %s: %v %v", out, back, err)
		}
		for i := range back {
			if back[i] != c.SysCtl[i] {
				t.Fatalf("round trip changed %v to %v", c.SysCtl[i], back[i])
			}
		}
	})
}

func FuzzAllowlist(f *testing.F) {
	f.Add([]byte("^net\\.core\\.somaxconn$\n# c\nnet\\.ipv4\\.conf\\.IFNAME\\..*\n"), "net.core.somaxconn")
	f.Add([]byte("net.core.(\n"), "net/core/x")
	f.Fuzz(func(t *testing.T, data []byte, key string) {
		allow, err := parseAllowlist(data, "fuzz")
		if err != nil {
			return
		}
		if allowed(allow, key) && len(allow) == 0 {
			t.Fatal("empty allowlist allowed a key")
		}
	})
}
