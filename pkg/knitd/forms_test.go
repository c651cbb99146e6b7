package knitd_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/knit-cni/knit/pkg/annotations"
	"github.com/knit-cni/knit/pkg/knitd"
	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/knit-cni/knit/pkg/podresources/podresourcestest"
	"github.com/knit-cni/knit/pkg/testutil"
)

// readRecords returns what the recorder plugin saw.
func readRecords(t *testing.T, path string) []record {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("recorder file: %v", err)
	}
	defer f.Close()
	var out []record
	s := bufio.NewScanner(f)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		var r record
		if err := json.Unmarshal(s.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func confMap(t *testing.T, r record) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Config, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// The JSON form: interface, mac, ips and cni-args reach the plugins that
// declare the capabilities (a conflist: bridge with host-local taking
// runtimeConfig ips, then a recorder seeing prevResult and its own
// runtimeConfig); default-route moves the pod's default route.
func TestJSONForm(t *testing.T) {
	e := newEnv(t)
	rec := filepath.Join(e.dir, "record")
	e.nad("", "chain", fmt.Sprintf(`{"cniVersion":"1.0.0","name":"chainnet","plugins":[
		{"type":"bridge","bridge":"brc","capabilities":{"ips":true},%s},
		{"type":"recorder","record":%q,"capabilities":{"mac":true,"portMappings":true}}]}`, e.ipam("10.10.3.0/24"), rec), nil)
	e.bridgeNAD("", "net-a", "bra", "10.10.1.0/24")
	p := e.pod("json", map[string]string{annotations.NetworksKey: `[
		{"name":"chain","interface":"fast0","ips":["10.10.3.77/24"],"mac":"02:aa:bb:cc:dd:ee",
		 "portMappings":[{"containerPort":80,"hostPort":8080,"protocol":"tcp"}],"cni-args":{"foo":"bar"}},
		{"name":"net-a","namespace":"` + e.ns + `","default-route":["10.10.1.1"]}]`})
	e.mustAdd(p)

	if a := addrs(t, p.sandbox, "fast0"); len(a) != 1 || a[0] != "10.10.3.77/24" {
		t.Errorf("fast0 addresses %v, want the requested 10.10.3.77/24", a)
	}
	recs := readRecords(t, rec)
	if len(recs) != 1 || recs[0].Command != "ADD" || recs[0].IfName != "fast0" {
		t.Fatalf("recorder calls %+v, want one ADD on fast0", recs)
	}
	m := confMap(t, recs[0])
	if m["name"] != "chainnet" || m["cniVersion"] != "1.0.0" {
		t.Errorf("recorder conf name/version %v/%v", m["name"], m["cniVersion"])
	}
	rc, _ := m["runtimeConfig"].(map[string]any)
	if rc["mac"] != "02:aa:bb:cc:dd:ee" || rc["portMappings"] == nil || rc["ips"] != nil {
		t.Errorf("recorder runtimeConfig %v: want mac and portMappings (its capabilities), not ips", rc)
	}
	if _, ok := m["capabilities"]; ok {
		t.Error("capabilities passed to the plugin")
	}
	args, _ := m["args"].(map[string]any)
	if cniArgs, _ := args["cni"].(map[string]any); cniArgs["foo"] != "bar" {
		t.Errorf("cni-args not in args.cni: %v", m["args"])
	}
	prev, _ := m["prevResult"].(map[string]any)
	if ips, _ := prev["ips"].([]any); len(ips) != 1 {
		t.Errorf("recorder prevResult %v: want the bridge's result", prev)
	}
	if !strings.Contains(recs[0].Args, "K8S_POD_NAME=json") {
		t.Errorf("CNI_ARGS %q not passed to the delegate", recs[0].Args)
	}

	// default-route: the default route now goes via net2, eth0 lost its.
	routes, err := nlsafe.RouteList(p.sandbox.H, nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var defaults []string
	for _, r := range routes {
		if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
			l, _ := p.sandbox.H.LinkByIndex(r.LinkIndex)
			defaults = append(defaults, l.Attrs().Name+" via "+r.Gw.String())
		}
	}
	if !slices.Equal(defaults, []string{"net2 via 10.10.1.1"}) {
		t.Errorf("default routes %v, want [net2 via 10.10.1.1]", defaults)
	}
	st := e.status(p)
	if len(st) != 3 || st[1].Interface != "fast0" || st[2].Interface != "net2" {
		t.Fatalf("status %+v", st)
	}
	checkDefaultRoutes(t, p, st)
	if len(st[0].DefaultRoute) != 0 || !slices.Equal(st[2].DefaultRoute, []string{"10.10.1.1"}) {
		t.Errorf("status default-route: eth0 %v, net2 %v; want none and [10.10.1.1]", st[0].DefaultRoute, st[2].DefaultRoute)
	}
	if err := e.del(p); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	recs = readRecords(t, rec)
	if len(recs) != 2 || recs[1].Command != "DEL" {
		t.Fatalf("recorder calls after DEL: %+v", recs)
	}
	if prev, _ := confMap(t, recs[1])["prevResult"].(map[string]any); prev == nil {
		t.Error("DEL got no prevResult")
	}
	if l := links(t, p.sandbox); len(l) != 0 {
		t.Errorf("links left: %v", l)
	}
}

// Seed 000: macvlan-conf (config verbatim but for a private IPAM data
// dir) once and twice; net1 (and net2) from 192.168.1.200-216.
func TestSeedMacvlanTwice(t *testing.T) {
	e := newEnv(t)
	// The seed's master is eth0: give the scratch host one.
	peer := testutil.NewNS(t)
	testutil.Veth(t, e.host, "eth0", peer, "sw0")
	e.nad("", "macvlan-conf", fmt.Sprintf(`{
      "cniVersion": "0.3.0",
      "type": "macvlan",
      "master": "eth0",
      "mode": "bridge",
      "ipam": {
        "type": "host-local",
        "dataDir": %q,
        "subnet": "192.168.1.0/24",
        "rangeStart": "192.168.1.200",
        "rangeEnd": "192.168.1.216",
        "routes": [
          { "dst": "0.0.0.0/0" }
        ],
        "gateway": "192.168.1.1"
      }
    }`, e.data), nil)
	inRange := func(ip string) bool {
		a := net.ParseIP(ip).To4()
		return a != nil && a[0] == 192 && a[1] == 168 && a[2] == 1 && a[3] >= 200 && a[3] <= 216
	}
	once := e.pod("samplepod", map[string]string{annotations.NetworksKey: "macvlan-conf"})
	e.mustAdd(once)
	st := e.status(once)
	if len(st) != 2 || st[1].Name != e.ns+"/macvlan-conf" || st[1].Interface != "net1" || len(st[1].IPs) != 1 || !inRange(st[1].IPs[0]) {
		t.Fatalf("samplepod status %+v", st)
	}
	checkDefaultRoutes(t, once, st)
	if l := link(t, once.sandbox, "net1"); l.Type() != "macvlan" {
		t.Errorf("net1 is a %s", l.Type())
	}
	twice := e.pod("samplepod2", map[string]string{annotations.NetworksKey: "macvlan-conf,macvlan-conf"})
	e.mustAdd(twice)
	st = e.status(twice)
	if len(st) != 3 || st[1].Interface != "net1" || st[2].Interface != "net2" || st[1].IPs[0] == st[2].IPs[0] ||
		!inRange(st[1].IPs[0]) || !inRange(st[2].IPs[0]) {
		t.Fatalf("same NAD twice: status %+v", st)
	}
	checkDefaultRoutes(t, twice, st)
	for _, p := range []*pod{once, twice} {
		if err := e.del(p); err != nil {
			t.Fatalf("DEL: %v", err)
		}
	}
	if a := e.allocations("macvlan-conf"); len(a) != 0 {
		t.Errorf("allocations left: %v", a)
	}
}

// v1.multus-cni.io/default-network replaces the cluster network (NAD in
// kube-system); defaultNetworks are added to pods outside system
// namespaces; pods in system namespaces get no network-status.
func TestDefaultNetworks(t *testing.T) {
	e := newEnv(t, func(c *knitd.Config) {
		c.DefaultNetworks = []string{"sidecar"}
		c.SystemNamespaces = []string{"knit-sys"}
	})
	e.createNamespace("kube-system")
	e.createNamespace("knit-sys")
	name := "alt-" + e.ns // kube-system is shared by the tests
	e.nad("kube-system", name, fmt.Sprintf(`{"cniVersion":"1.0.0","type":"bridge","bridge":"bralt","isGateway":true,%s}`, e.ipam("10.20.0.0/24")), nil)
	e.nad("kube-system", "sidecar", fmt.Sprintf(`{"cniVersion":"1.0.0","type":"bridge","bridge":"brsc",%s}`, e.ipam("10.30.0.0/24")), nil)
	e.bridgeNAD("", "net-a", "bra", "10.10.1.0/24")

	p := e.pod("alt", map[string]string{annotations.DefaultNetworkKey: name, annotations.NetworksKey: "net-a"})
	res := e.mustAdd(p)
	if !strings.HasPrefix(res.IPs[0].Address.IP.String(), "10.20.0.") {
		t.Errorf("runtime result %v, want the default-network override's", res.IPs)
	}
	st := e.status(p)
	want := []string{"kube-system/" + name + "@eth0", "kube-system/sidecar@net1", e.ns + "/net-a@net2"}
	var got []string
	for _, s := range st {
		got = append(got, s.Name+"@"+s.Interface)
	}
	if !slices.Equal(got, want) || !st[0].Default || st[1].Default {
		t.Errorf("status %v (default %v), want %v with only the first default", got, st[0].Default, want)
	}

	sysPod := e.podIn("knit-sys", "sys2-"+e.ns, nil)
	e.mustAdd(sysPod)
	if l := links(t, sysPod.sandbox); !slices.Equal(l, []string{"eth0"}) {
		t.Errorf("system-namespace pod interfaces %v, want only eth0 (no defaultNetworks)", l)
	}
	e.events(sysPod, "AddedInterface", 1)
	got2, err := e.c.Client.CoreV1().Pods("knit-sys").Get(t.Context(), sysPod.Name, getOpts)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got2.Annotations[annotations.NetworkStatusKey]; ok {
		t.Error("network-status written for a system-namespace pod")
	}
	for _, x := range []*pod{p, sysPod} {
		if err := e.del(x); err != nil {
			t.Errorf("DEL: %v", err)
		}
	}
}

// namespaceIsolation: a pod may use NADs of its namespace and of
// globalNamespaces only.
func TestNamespaceIsolation(t *testing.T) {
	e := newEnv(t, func(c *knitd.Config) {
		c.NamespaceIsolation = true
		c.GlobalNamespaces = knitd.StringList{"knit-global"}
	})
	e.createNamespace("knit-global")
	e.createNamespace("knit-private")
	gname, pname := "g-"+e.ns, "p-"+e.ns
	e.bridgeNAD("knit-global", gname, "brg", "10.40.0.0/24")
	e.bridgeNAD("knit-private", pname, "brp", "10.41.0.0/24")
	ok := e.pod("iso-ok", map[string]string{annotations.NetworksKey: "knit-global/" + gname})
	e.mustAdd(ok)
	bad := e.pod("iso-bad", map[string]string{annotations.NetworksKey: "knit-private/" + pname})
	_, err := e.add(bad)
	if err == nil {
		t.Fatal("ADD across namespaces succeeded under isolation")
	}
	te := cniError(t, err)
	want := annotations.NetworksKey + "[0].namespace: namespace isolation"
	if te.Code != 7 || !strings.Contains(te.Msg, want) {
		t.Errorf("error %d %q, want 7 containing %q", te.Code, te.Msg, want)
	}
	e.events(bad, "InvalidNetworkAnnotation", 1)
	if err := e.del(ok); err != nil {
		t.Fatal(err)
	}
}

// A NAD without spec.config uses the node's config file of that name;
// the config's missing name is injected from the NAD's name.
func TestNADConfigSources(t *testing.T) {
	e := newEnv(t)
	file := fmt.Sprintf(`{"cniVersion":"0.4.0","name":"from-file","type":"bridge","bridge":"brf",%s}`, e.ipam("10.50.0.0/24"))
	if err := os.WriteFile(filepath.Join(e.confDir, "90-from-file.conf"), []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	e.nad("", "from-file", "", nil)
	e.nad("", "nameless", fmt.Sprintf(`{"cniVersion":"0.4.0","type":"bridge","bridge":"brn",%s}`, e.ipam("10.51.0.0/24")), nil)
	p := e.pod("sources", map[string]string{annotations.NetworksKey: "from-file,nameless"})
	e.mustAdd(p)
	if a := addrs(t, p.sandbox, "net1"); len(a) != 1 || !strings.HasPrefix(a[0], "10.50.0.") {
		t.Errorf("net1 %v, want an address of the file's network", a)
	}
	// host-local keys its data by network name: the injected name.
	if a := e.allocations("nameless"); len(a) != 1 {
		t.Errorf("nameless network allocations %v, want one under the NAD's name", a)
	}
	if err := e.check(p); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := e.del(p); err != nil {
		t.Fatal(err)
	}
}

// A NAD annotated with k8s.v1.cni.cncf.io/resourceName gets the pod's
// device from the kubelet pod-resources API as runtimeConfig deviceID
// (and top-level deviceID, as Multus); two NADs of one resource get two
// devices.
func TestDeviceID(t *testing.T) {
	srv := &podresourcestest.Server{}
	sock := srv.Start(t)
	e := newEnv(t, func(c *knitd.Config) { c.PodResourcesSocket = sock })
	rec := filepath.Join(e.dir, "record")
	e.nad("", "sriov", fmt.Sprintf(`{"cniVersion":"1.0.0","type":"recorder","record":%q,"capabilities":{"deviceID":true}}`, rec),
		map[string]string{annotations.ResourceNameKey: "example.com/vf"})
	p := e.pod("dev", map[string]string{annotations.NetworksKey: "sriov,sriov"})
	srv.Pods = []*podresourcesv1.PodResources{{Name: p.Name, Namespace: p.Namespace, Containers: []*podresourcesv1.ContainerResources{
		{Name: "c", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "example.com/vf", DeviceIds: []string{"0000:03:00.1", "0000:03:00.2"}}}}}}}
	e.mustAdd(p)
	recs := readRecords(t, rec)
	if len(recs) != 2 {
		t.Fatalf("recorder calls %d, want 2", len(recs))
	}
	for i, want := range []string{"0000:03:00.1", "0000:03:00.2"} {
		m := confMap(t, recs[i])
		rc, _ := m["runtimeConfig"].(map[string]any)
		if rc["deviceID"] != want || m["deviceID"] != want {
			t.Errorf("call %d: runtimeConfig %v, deviceID %v; want %s", i, rc, m["deviceID"], want)
		}
	}
	if err := e.del(p); err != nil {
		t.Fatal(err)
	}
}

// Seed 002: the multus-br1 bridge NAD (verbatim but for a private IPAM data
// dir) on two pods, which reach each other over net1.
func TestSeedBridgePing(t *testing.T) {
	e := newEnv(t)
	e.nad("", "multus-br1", fmt.Sprintf(`{
      "cniVersion": "0.3.1",
      "type": "bridge",
      "bridge": "br1",
      "ipam": {
        "type": "host-local",
        "dataDir": %q,
        "subnet": "192.168.72.0/24",
         "rangeStart": "192.168.72.240",
         "rangeEnd": "192.168.72.250"
      }
    }`, e.data), nil)
	var ips []string
	var pods []*pod
	for _, name := range []string{"net-pod1", "net-pod2"} {
		p := e.pod(name, map[string]string{annotations.NetworksKey: "multus-br1"})
		e.mustAdd(p)
		st := e.status(p)
		if len(st) != 2 || st[1].Interface != "net1" || len(st[1].IPs) != 1 || !strings.HasPrefix(st[1].IPs[0], "192.168.72.2") {
			t.Fatalf("%s status %+v", name, st)
		}
		ips = append(ips, st[1].IPs[0])
		pods = append(pods, p)
	}
	for i, p := range pods {
		peer := ips[1-i]
		out, err := exec.Command("nsenter", "--net="+p.sandbox.Path(), "ping", "-c1", "-W2", "-I", "net1", peer).CombinedOutput()
		if err != nil {
			t.Errorf("%s -> %s over net1: %v\n%s", p.Name, peer, err, out)
		}
	}
	for _, p := range pods {
		if err := e.del(p); err != nil {
			t.Fatal(err)
		}
	}
	if a := e.allocations("multus-br1"); len(a) != 0 {
		t.Errorf("allocations left: %v", a)
	}
}

// Kubelet's runtimeConfig (here portMappings, which knit's generated
// conflist asks for because the cluster network does) reaches the
// cluster network only; a secondary gets only what its annotation asks.
func TestRuntimeConfigIsolation(t *testing.T) {
	e := newEnv(t)
	clusterRec, secRec := filepath.Join(e.dir, "cluster-rec"), filepath.Join(e.dir, "sec-rec")
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"cbr0","plugins":[
		{"type":"bridge","bridge":"cni0","isGateway":true,"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.244.0.0/24"}]]}},
		{"type":"recorder","record":%q,"capabilities":{"portMappings":true}}]}`, e.data, clusterRec)
	if err := os.WriteFile(filepath.Join(e.confDir, ".tmp"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(e.confDir, ".tmp"), filepath.Join(e.confDir, "10-cluster.conflist")); err != nil {
		t.Fatal(err)
	}
	e.waitFor("portMappings capability in 00-knit.conflist", func() bool {
		l, err := libcni.ConfListFromFile(filepath.Join(e.confDir, "00-knit.conflist"))
		return err == nil && l.Plugins[0].Network.Capabilities["portMappings"]
	})
	e.nad("", "sec", fmt.Sprintf(`{"cniVersion":"1.0.0","type":"recorder","record":%q,"capabilities":{"portMappings":true}}`, secRec), nil)
	p := e.pod("rc", map[string]string{annotations.NetworksKey: `[{"name":"sec","portMappings":[{"containerPort":80,"hostPort":8080}]},{"name":"sec"}]`})
	rt := e.rt(p)
	rt.CapabilityArgs = map[string]any{"portMappings": []map[string]any{{"hostPort": 9999, "containerPort": 99, "protocol": "tcp"}}}
	if err := e.host.Do(func() error {
		_, err := e.cniConf.AddNetworkList(context.Background(), e.confList(), rt)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	hostPorts := func(r record) []float64 {
		rc, _ := confMap(t, r)["runtimeConfig"].(map[string]any)
		var out []float64
		pms, _ := rc["portMappings"].([]any)
		for _, pm := range pms {
			out = append(out, pm.(map[string]any)["hostPort"].(float64))
		}
		return out
	}
	cl := readRecords(t, clusterRec)
	if len(cl) != 1 || !slices.Equal(hostPorts(cl[0]), []float64{9999}) {
		t.Errorf("cluster network's portMappings %v, want kubelet's [9999]", hostPorts(cl[0]))
	}
	sec := readRecords(t, secRec)
	if len(sec) != 2 || !slices.Equal(hostPorts(sec[0]), []float64{8080}) || hostPorts(sec[1]) != nil {
		t.Errorf("secondaries' portMappings %v and %v, want the annotation's [8080] and none", hostPorts(sec[0]), hostPorts(sec[1]))
	}
	if err := e.host.Do(func() error { return e.cniConf.DelNetworkList(context.Background(), e.confList(), rt) }); err != nil {
		t.Fatal(err)
	}
}
