package knitd_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/knit-cni/knit/pkg/annotations"
)

// Every bad input fails ADD with the right CNI code and a message naming
// the field or NAD, puts a Warning event saying the same on the pod, and
// leaves nothing behind (the cluster network attached first is undone).
func TestBadInput(t *testing.T) {
	e := newEnv(t)
	e.bridgeNAD("", "net-a", "bra", "10.10.1.0/24")
	e.nad("", "bad-config", `{"cniVersion":"0.3.1","type":`, nil)
	e.nad("", "no-type", `{"cniVersion":"0.3.1","name":"x"}`, nil)
	e.nad("", "bad-master", fmt.Sprintf(`{"cniVersion":"0.3.1","type":"macvlan","master":"nosuchdev0",%s}`, e.ipam("10.10.9.0/24")), nil)
	nets := annotations.NetworksKey
	cases := []struct {
		name, key, value string
		code             uint
		reason, want     string
	}{
		{"malformed-json", nets, `[{"name": }]`, 6, "InvalidNetworkAnnotation", nets + ": JSON form"},
		{"json-object", nets, `{"name":"net-a"}`, 6, "InvalidNetworkAnnotation", nets + ": JSON form must be a list"},
		{"json-type", nets, `[{"name":"net-a","ips":"10.10.1.5"}]`, 6, "InvalidNetworkAnnotation", nets + "[0].ips"},
		{"bad-name", nets, `Net_A`, 7, "InvalidNetworkAnnotation", nets + "[0].name"},
		{"empty-item", nets, `net-a,,net-a`, 7, "InvalidNetworkAnnotation", nets + "[1]: empty network name"},
		{"long-ifname", nets, `net-a@averyverylongname`, 7, "InvalidNetworkAnnotation", nets + "[0].interface"},
		{"bad-ifname", nets, `[{"name":"net-a","interface":"a/b"}]`, 7, "InvalidNetworkAnnotation", nets + "[0].interface"},
		{"dup-ifname", nets, `net-a@data,net-a@data`, 7, "InvalidNetworkAnnotation", nets + "[1].interface"},
		{"dup-eth0", nets, `net-a@eth0`, 7, "InvalidNetworkAnnotation", nets + "[0].interface"},
		{"two-default-routes", nets, `[{"name":"net-a","default-route":["10.10.1.1"]},{"name":"net-a","default-route":["10.10.1.1"]}]`,
			7, "InvalidNetworkAnnotation", nets + "[1].default-route"},
		{"bad-gateway", nets, `[{"name":"net-a","default-route":["10.10.1.x"]}]`, 6, "InvalidNetworkAnnotation", nets + "[0].default-route"},
		{"ips-with-claim", nets, `[{"name":"net-a","ips":["10.10.1.5/24"],"ipam-claim-reference":"c1"}]`, 7, "InvalidNetworkAnnotation", nets + "[0].ips"},
		{"ips-no-capability", nets, `[{"name":"net-a","ips":["10.10.1.5/24"]}]`, 7, "InvalidNetworkAnnotation", nets + `[0].ips: network ` + "%NS%/net-a has no plugin with the \"ips\" capability"},
		{"mac-no-capability", nets, `[{"name":"net-a","mac":"02:00:00:00:00:01"}]`, 7, "InvalidNetworkAnnotation", nets + "[0].mac"},
		{"bad-mac", nets, `[{"name":"net-a","mac":"zz:00"}]`, 7, "InvalidNetworkAnnotation", nets + "[0].mac"},
		{"portmap-no-capability", nets, `[{"name":"net-a","portMappings":[{"containerPort":80,"hostPort":8080}]}]`, 7, "InvalidNetworkAnnotation", nets + "[0].portMappings"},
		{"bandwidth-no-capability", nets, `[{"name":"net-a","bandwidth":{"ingressRate":1000,"ingressBurst":100}}]`, 7, "InvalidNetworkAnnotation", nets + "[0].bandwidth"},
		{"ib-guid-no-capability", nets, `[{"name":"net-a","infiniband-guid":"00:11:22:33:44:55:66:77"}]`, 7, "InvalidNetworkAnnotation", nets + "[0].infiniband-guid"},
		{"bad-port", nets, `[{"name":"net-a","portMappings":[{"containerPort":0,"hostPort":8080}]}]`, 7, "InvalidNetworkAnnotation", nets + "[0].portMappings[0]"},
		{"missing-nad", nets, `net-a,nope`, 7, "NoNetworkFound", nets + "[1]: NetworkAttachmentDefinition %NS%/nope not found"},
		{"bad-config", nets, `bad-config`, 6, "InvalidNetworkConfig", "NetworkAttachmentDefinition %NS%/bad-config: spec.config"},
		{"no-type", nets, `no-type`, 7, "InvalidNetworkConfig", "%NS%/no-type: spec.config: type: missing plugin type"},
		{"delegate-fails", nets, `net-a,bad-master`, 7, "NetworkAttachFailed", "network %NS%/bad-master (interface net2)"},
		{"default-network-two", annotations.DefaultNetworkKey, `a,b`, 7, "InvalidNetworkAnnotation", annotations.DefaultNetworkKey + ": names 2 networks"},
		{"default-network-missing", annotations.DefaultNetworkKey, `nope`, 7, "NoNetworkFound", annotations.DefaultNetworkKey + ": NetworkAttachmentDefinition kube-system/nope not found"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := strings.ReplaceAll(c.want, "%NS%", e.ns)
			p := e.pod(fmt.Sprintf("bad-%d", i), map[string]string{c.key: c.value})
			_, err := e.add(p)
			if err == nil {
				t.Fatal("ADD succeeded")
			}
			te := cniError(t, err)
			if te.Code != c.code || !strings.Contains(te.Msg, want) {
				t.Errorf("ADD error code %d %q, want code %d containing %q", te.Code, te.Msg, c.code, want)
			}
			evs := e.events(p, c.reason, 1)
			if evs[0].Type != "Warning" || !strings.Contains(evs[0].Message, want) {
				t.Errorf("event %s %q, want a Warning containing %q", evs[0].Type, evs[0].Message, want)
			}
			if l := links(t, p.sandbox); len(l) != 0 {
				t.Errorf("links left in the pod: %v", l)
			}
			for _, nw := range []string{"cbr0", "net-a", "bad-master"} {
				if a := e.allocations(nw); len(a) != 0 {
					t.Errorf("%s: addresses left allocated: %v", nw, a)
				}
			}
			if c := e.cacheFiles(); len(c) != 0 {
				t.Errorf("cache entries left: %v", c)
			}
			if err := e.del(p); err != nil { // the runtime's DEL after a failed ADD
				t.Errorf("DEL after failed ADD: %v", err)
			}
		})
	}
}

// A runtime passing the host's namespace as CNI_NETNS is refused with code
// 8 before anything is attached: the plugins would otherwise rename and
// move host links.
func TestHostNetnsRefused(t *testing.T) {
	e := newEnv(t)
	p := e.pod("host-ns", nil)
	before := links(t, e.host)
	rt := e.rt(p)
	rt.NetNS = e.host.Path()
	err := e.host.Do(func() error {
		_, err := e.cniConf.AddNetworkList(context.Background(), e.confList(), rt)
		return err
	})
	if te := cniError(t, err); te.Code != 8 || !strings.Contains(te.Msg, "host's network namespace") {
		t.Fatalf("ADD into the host namespace: code %d %q, want code 8", te.Code, te.Msg)
	}
	if after := links(t, e.host); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("host links changed: %v -> %v", before, after)
	}
	if c := e.cacheFiles(); len(c) != 0 {
		t.Errorf("cache entries left: %v", c)
	}
	if a := e.allocations("cbr0"); len(a) != 0 {
		t.Errorf("addresses allocated: %v", a)
	}
}
