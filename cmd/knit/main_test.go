package main

import "testing"

// Only complete, valid ADD and DEL calls take the fast path; everything
// else goes through skel, which owns the spec's environment errors.
func TestFastRequest(t *testing.T) {
	base := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x",
		"CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin:/usr/lib/cni", "CNI_ARGS": "K8S_POD_NAME=p"}
	cases := []struct {
		name string
		set  map[string]string
		fast bool
	}{
		{"add", nil, true},
		{"del", map[string]string{"CNI_COMMAND": "DEL"}, true},
		{"del-without-netns", map[string]string{"CNI_COMMAND": "DEL", "CNI_NETNS": ""}, true},
		{"add-without-netns", map[string]string{"CNI_NETNS": ""}, false},
		{"check", map[string]string{"CNI_COMMAND": "CHECK"}, false},
		{"version", map[string]string{"CNI_COMMAND": "VERSION"}, false},
		{"gc", map[string]string{"CNI_COMMAND": "GC"}, false},
		{"no-command", map[string]string{"CNI_COMMAND": ""}, false},
		{"no-container", map[string]string{"CNI_CONTAINERID": ""}, false},
		{"bad-container", map[string]string{"CNI_CONTAINERID": "../x"}, false},
		{"no-ifname", map[string]string{"CNI_IFNAME": ""}, false},
		{"bad-ifname", map[string]string{"CNI_IFNAME": "a/b"}, false},
		{"no-path", map[string]string{"CNI_PATH": ""}, false},
		{"netns-override", map[string]string{"CNI_NETNS_OVERRIDE": "1"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			for k, v := range c.set {
				env[k] = v
			}
			req, fast := fastRequest(func(k string) string { return env[k] })
			if fast != c.fast {
				t.Fatalf("fast = %v, want %v", fast, c.fast)
			}
			if !fast {
				return
			}
			if string(req.Command) != env["CNI_COMMAND"] || req.ContainerID != "c1" || req.IfName != "eth0" ||
				req.Netns != env["CNI_NETNS"] || req.Args != "K8S_POD_NAME=p" ||
				len(req.Path) != 2 || req.Path[1] != "/usr/lib/cni" {
				t.Errorf("request %+v", req)
			}
		})
	}
}
