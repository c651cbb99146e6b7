package dhcp_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/knit-cni/knit/pkg/chaintest"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/testutil"
)

func conf(version, sock, extra string) []byte {
	return []byte(fmt.Sprintf(`{"cniVersion":%q,"name":"dnet","type":"macvlan",
		"ipam":{"type":"dhcp","daemonSocketPath":%q%s}}`, version, sock, extra))
}

func execPlugin(t *testing.T, cmd cni.Command, req *cni.Request) ([]byte, error) {
	t.Helper()
	r := *req
	r.Command = cmd
	return testutil.Exec(context.Background(), filepath.Join(testutil.PluginDir(t), "dhcp"), &r)
}

func wantCode(t *testing.T, err error, code uint) *types.Error {
	t.Helper()
	var te *types.Error
	if !errors.As(err, &te) || te.Code != code {
		t.Fatalf("error %v, want a CNI error with code %d", err, code)
	}
	return te
}

// assertLease checks an IPAM result against the test server's pool.
func assertLease(t *testing.T, res *current.Result) string {
	t.Helper()
	if len(res.IPs) != 1 {
		t.Fatalf("ips %+v", res.IPs)
	}
	ip := res.IPs[0]
	if !cidr("10.88.0.0/24").Contains(ip.Address.IP) || ip.Address.Mask.String() != net.CIDRMask(24, 32).String() {
		t.Fatalf("address %s not from the server's pool", ip.Address.String())
	}
	if !ip.Gateway.Equal(net.ParseIP(serverIP)) {
		t.Fatalf("gateway %v", ip.Gateway)
	}
	if len(res.Routes) != 1 || res.Routes[0].Dst.String() != "0.0.0.0/0" || !res.Routes[0].GW.Equal(net.ParseIP(serverIP)) {
		t.Fatalf("routes %+v, want a default route via the router", res.Routes)
	}
	return ip.Address.IP.String()
}

func TestLeaseOverBridgeEveryVersion(t *testing.T) {
	testutil.RequireRoot(t)
	seg := newBridgeSegment(t)
	srv := seg.startDnsmasq(t)
	sock := startDaemon(t)
	for i, v := range cni.SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			c := seg.container(t)
			cid := fmt.Sprintf("ctr-%d", i)
			req := &cni.Request{ContainerID: cid, Netns: c.Path(), IfName: "eth0", Config: conf(v, sock, `,"timeout":"8s"`)}
			start := time.Now()
			out, err := execPlugin(t, cni.CmdAdd, req)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			t.Logf("ADD took %v", time.Since(start))
			res := testutil.DecodeResult(t, req.Config, out)
			ip := assertLease(t, res)
			var raw struct {
				CNIVersion string           `json:"cniVersion"`
				IPs        []map[string]any `json:"ips"`
			}
			if err := json.Unmarshal(out, &raw); err != nil || raw.CNIVersion != v {
				t.Fatalf("result %s: %v", out, err)
			}
			if _, has := raw.IPs[0]["version"]; has != (v < "1.0.0") {
				t.Errorf("ips[].version present = %v in %s", has, v)
			}
			l, ok := srv.leaseFor(t, ip)
			if !ok {
				t.Fatalf("dnsmasq has no lease for %s", ip)
			}
			mac := chaintest.LinkByName(t, c, "eth0").Attrs().HardwareAddr.String()
			wantID := "00:" + hexColon(cid+"/dnet/eth0")
			if l.MAC != mac || l.ID != wantID {
				t.Fatalf("lease %+v, want MAC %s and client ID %s", l, mac, wantID)
			}
			// A repeated ADD returns the same lease.
			out2, err := execPlugin(t, cni.CmdAdd, req)
			if err != nil || assertLease(t, testutil.DecodeResult(t, req.Config, out2)) != ip {
				t.Fatalf("repeated ADD: %v %s", err, out2)
			}
			withPrev := addPrev(t, req.Config, out)
			if v >= "0.4.0" {
				check := *req
				check.Config = withPrev
				if _, err := execPlugin(t, cni.CmdCheck, &check); err != nil {
					t.Fatalf("CHECK: %v", err)
				}
			}
			for range 2 {
				if _, err := execPlugin(t, cni.CmdDel, req); err != nil {
					t.Fatalf("DEL: %v", err)
				}
			}
			poll(t, 5*time.Second, "dnsmasq to drop the released lease", func() bool { _, ok := srv.leaseFor(t, ip); return !ok })
			if v >= "0.4.0" {
				check := *req
				check.Config = withPrev
				if _, err := execPlugin(t, cni.CmdCheck, &check); err == nil {
					t.Fatal("CHECK after DEL succeeded")
				}
			}
		})
	}
}

func hexColon(s string) string {
	parts := make([]string, len(s))
	for i := range s {
		parts[i] = fmt.Sprintf("%02x", s[i])
	}
	return strings.Join(parts, ":")
}

// addPrev returns config with the printed result as prevResult.
func addPrev(t *testing.T, config, result []byte) []byte {
	t.Helper()
	m := map[string]any{}
	if err := json.Unmarshal(config, &m); err != nil {
		t.Fatal(err)
	}
	m["prevResult"] = json.RawMessage(result)
	b, _ := json.Marshal(m)
	return b
}

// TestLeaseOverMacvlanCarriesTraffic: the address the lease gives a
// macvlan works on the wire. The server checks the address is free before
// offering it, so the client must keep asking for a few seconds.
func TestLeaseOverMacvlanCarriesTraffic(t *testing.T) {
	testutil.RequireRoot(t)
	seg := newMacvlanSegment(t)
	seg.pingCheck = true
	srv := seg.startDnsmasq(t)
	sock := startDaemon(t)
	c := seg.container(t)
	req := &cni.Request{ContainerID: "mv-1", Netns: c.Path(), IfName: "eth0", Config: conf("1.1.0", sock, "")}
	out, err := execPlugin(t, cni.CmdAdd, req)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	res := testutil.DecodeResult(t, req.Config, out)
	ip := assertLease(t, res)
	if _, ok := srv.leaseFor(t, ip); !ok {
		t.Fatalf("dnsmasq has no lease for %s", ip)
	}
	// Configure it as a main plugin would and talk to the server.
	chaintest.AddAddr(t, c, "eth0", &res.IPs[0].Address)
	if err := testutil.Ping(c, serverIP, ""); err != nil {
		t.Fatalf("ping the server from the leased address: %v", err)
	}
	if _, err := execPlugin(t, cni.CmdDel, req); err != nil {
		t.Fatal(err)
	}
	poll(t, 5*time.Second, "the release", func() bool { _, ok := srv.leaseFor(t, ip); return !ok })
}

// TestRenewal: with T1 at 3 s the daemon renews long before the 2-minute
// lease ends; dnsmasq's lease file shows the expiry move.
func TestRenewal(t *testing.T) {
	testutil.RequireRoot(t)
	seg := newBridgeSegment(t)
	srv := seg.startDnsmasq(t, "--dhcp-option=58,3", "--dhcp-option=59,100")
	sock := startDaemon(t)
	c := seg.container(t)
	req := &cni.Request{ContainerID: "renew-1", Netns: c.Path(), IfName: "eth0", Config: conf("1.0.0", sock, "")}
	out, err := execPlugin(t, cni.CmdAdd, req)
	if err != nil {
		t.Fatal(err)
	}
	ip := assertLease(t, testutil.DecodeResult(t, req.Config, out))
	first, ok := srv.leaseFor(t, ip)
	if !ok {
		t.Fatal("no lease")
	}
	// A renewal at T1 (3 s) moves the 2-minute expiry by about 3 s.
	poll(t, 15*time.Second, "a renewal to move the lease's expiry", func() bool {
		l, ok := srv.leaseFor(t, ip)
		return ok && l.Expiry >= first.Expiry+2
	})
	// Renewed again: the daemon keeps going.
	second, _ := srv.leaseFor(t, ip)
	poll(t, 15*time.Second, "a second renewal", func() bool {
		l, ok := srv.leaseFor(t, ip)
		return ok && l.Expiry >= second.Expiry+2
	})
	if _, err := execPlugin(t, cni.CmdDel, req); err != nil {
		t.Fatal(err)
	}
	poll(t, 5*time.Second, "the release", func() bool { _, ok := srv.leaseFor(t, ip); return !ok })
}

// TestNoServerTimesOut: nothing answers; ADD fails with "try again later"
// after the configured timeout, naming the interface and the time.
func TestNoServerTimesOut(t *testing.T) {
	testutil.RequireRoot(t)
	seg := newBridgeSegment(t) // no dnsmasq
	sock := startDaemon(t)
	c := seg.container(t)
	req := &cni.Request{ContainerID: "t-1", Netns: c.Path(), IfName: "eth0", Config: conf("1.0.0", sock, `,"timeout":"2s"`)}
	start := time.Now()
	_, err := execPlugin(t, cni.CmdAdd, req)
	took := time.Since(start)
	te := wantCode(t, err, types.ErrTryAgainLater)
	if !strings.Contains(te.Msg, "eth0") || !strings.Contains(te.Msg, "2s") {
		t.Fatalf("message %q should name the interface and the timeout", te.Msg)
	}
	if took < 2*time.Second || took > 4*time.Second {
		t.Fatalf("ADD took %v with a 2s timeout", took)
	}
	// Nothing is held: CHECK knows no lease, DEL is fine.
	if _, err := execPlugin(t, cni.CmdCheck, &cni.Request{ContainerID: "t-1", Netns: c.Path(), IfName: "eth0", Config: req.Config}); err == nil {
		t.Fatal("CHECK found a lease after a failed ADD")
	}
	if _, err := execPlugin(t, cni.CmdDel, req); err != nil {
		t.Fatal(err)
	}
}

func TestNoDaemon(t *testing.T) {
	testutil.RequireRoot(t)
	c := testutil.NewNS(t)
	sock := filepath.Join(t.TempDir(), "none.sock")
	req := &cni.Request{ContainerID: "n-1", Netns: c.Path(), IfName: "eth0", Config: conf("1.1.0", sock, "")}
	_, err := execPlugin(t, cni.CmdAdd, req)
	te := wantCode(t, err, types.ErrTryAgainLater)
	if !strings.Contains(te.Msg, "dhcp daemon") || !strings.Contains(te.Msg, sock) {
		t.Fatalf("message %q should say to start `dhcp daemon` and name the socket", te.Msg)
	}
	if _, err := execPlugin(t, cni.CmdDel, req); err != nil {
		t.Fatalf("DEL without a daemon: %v", err)
	}
	_, err = execPlugin(t, cni.CmdStatus, req)
	wantCode(t, err, cni.ErrNotReady)
}

func TestGC(t *testing.T) {
	testutil.RequireRoot(t)
	seg := newBridgeSegment(t)
	srv := seg.startDnsmasq(t)
	sock := startDaemon(t)
	ips := map[string]string{}
	for _, cid := range []string{"keep", "gone"} {
		c := seg.container(t)
		req := &cni.Request{ContainerID: cid, Netns: c.Path(), IfName: "eth0", Config: conf("1.1.0", sock, "")}
		out, err := execPlugin(t, cni.CmdAdd, req)
		if err != nil {
			t.Fatal(err)
		}
		ips[cid] = assertLease(t, testutil.DecodeResult(t, req.Config, out))
	}
	gc := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"dnet","type":"macvlan","ipam":{"type":"dhcp","daemonSocketPath":%q},
		"cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}]}`, sock)
	if _, err := execPlugin(t, cni.CmdGC, &cni.Request{Config: []byte(gc)}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	poll(t, 5*time.Second, "GC to release gone's lease", func() bool { _, ok := srv.leaseFor(t, ips["gone"]); return !ok })
	if _, ok := srv.leaseFor(t, ips["keep"]); !ok {
		t.Fatal("GC released a valid lease")
	}
}

func TestConfigErrors(t *testing.T) {
	c := testutil.NewNS(t)
	sock := filepath.Join(t.TempDir(), "unused.sock")
	cases := map[string]string{
		"unknown option name": `,"request":[{"option":"no-such-option"}]`,
		"option out of range": `,"request":[{"option":"300"}]`,
		"managed option":      `,"provide":[{"option":"53","value":"x"}]`,
		"too long value":      `,"provide":[{"option":"host-name","value":"` + strings.Repeat("a", 256) + `"}]`,
		"negative timeout":    `,"timeout":"-1s"`,
		"huge timeout":        `,"timeout":"1h"`,
	}
	for name, extra := range cases {
		t.Run(name, func(t *testing.T) {
			req := &cni.Request{ContainerID: "x", Netns: c.Path(), IfName: "eth0", Config: conf("1.0.0", sock, extra)}
			_, err := execPlugin(t, cni.CmdAdd, req)
			wantCode(t, err, types.ErrInvalidNetworkConfig)
		})
	}
	req := &cni.Request{ContainerID: "x", Netns: c.Path(), IfName: "eth0", Config: conf("1.0.0", sock, `,"timeout":"soon"`)}
	_, err := execPlugin(t, cni.CmdAdd, req)
	wantCode(t, err, types.ErrDecodingFailure)
	req.Config = []byte(`{"cniVersion":"1.0.0","name":"dnet","type":"dhcp"}`)
	_, err = execPlugin(t, cni.CmdAdd, req)
	wantCode(t, err, types.ErrInvalidNetworkConfig)
}

// TestOptions: a host name provided from CNI_ARGS reaches the server, and
// requested classless static routes replace the router route.
func TestOptions(t *testing.T) {
	testutil.RequireRoot(t)
	seg := newBridgeSegment(t)
	srv := seg.startDnsmasq(t, "--dhcp-option=121,10.5.0.0/16,10.88.0.7,0.0.0.0/0,10.88.0.1", "--dhcp-option=option:dns-server,10.88.0.53")
	sock := startDaemon(t)
	c := seg.container(t)
	extra := `,"provide":[{"option":"host-name","fromArg":"K8S_POD_NAME"}],"request":[{"option":"121"},{"option":"6"}]`
	req := &cni.Request{ContainerID: "opt-1", Netns: c.Path(), IfName: "eth0", Args: "IgnoreUnknown=1;K8S_POD_NAME=web-0",
		Config: conf("1.0.0", sock, extra)}
	out, err := execPlugin(t, cni.CmdAdd, req)
	if err != nil {
		t.Fatal(err)
	}
	res := testutil.DecodeResult(t, req.Config, out)
	l, ok := srv.leaseFor(t, res.IPs[0].Address.IP.String())
	if !ok || l.Host != "web-0" {
		t.Fatalf("lease %+v, want host name web-0", l)
	}
	var routes []string
	for _, r := range res.Routes {
		routes = append(routes, r.Dst.String()+" via "+r.GW.String())
	}
	if got := strings.Join(routes, ", "); got != "10.5.0.0/16 via 10.88.0.7, 0.0.0.0/0 via 10.88.0.1" {
		t.Fatalf("routes %s, want option 121's", got)
	}
	if len(res.DNS.Nameservers) != 1 || res.DNS.Nameservers[0] != "10.88.0.53" {
		t.Fatalf("dns %+v", res.DNS)
	}
}

// TestDaemonBinary runs the real `dhcp daemon` and stops it with SIGTERM.
func TestDaemonBinary(t *testing.T) {
	testutil.RequireRoot(t)
	seg := newBridgeSegment(t)
	srv := seg.startDnsmasq(t)
	sock := filepath.Join(t.TempDir(), "run", "dhcp.sock")
	pid := filepath.Join(t.TempDir(), "dhcp.pid")
	d := exec.Command(filepath.Join(testutil.PluginDir(t), "dhcp"), "daemon", "-socketpath", sock, "-pidfile", pid, "-statedir", t.TempDir())
	var log syncBuffer
	d.Stdout, d.Stderr = &log, &log
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Process.Kill(); _, _ = d.Process.Wait() })
	poll(t, 5*time.Second, "the daemon's socket", func() bool { _, err := os.Stat(sock); return err == nil })
	c := seg.container(t)
	req := &cni.Request{ContainerID: "bin-1", Netns: c.Path(), IfName: "eth0", Config: conf("0.3.1", sock, "")}
	out, err := execPlugin(t, cni.CmdAdd, req)
	if err != nil {
		t.Fatalf("ADD: %v\n%s", err, log.String())
	}
	ip := assertLease(t, testutil.DecodeResult(t, req.Config, out))
	// A second daemon on the same socket refuses to start.
	second, err := exec.Command(filepath.Join(testutil.PluginDir(t), "dhcp"), "daemon", "-socketpath", sock, "-statedir", "").CombinedOutput()
	if err == nil || !strings.Contains(string(second), "another dhcp daemon") {
		t.Fatalf("second daemon: %v %s", err, second)
	}
	if _, err := execPlugin(t, cni.CmdDel, req); err != nil {
		t.Fatal(err)
	}
	poll(t, 5*time.Second, "the release", func() bool { _, ok := srv.leaseFor(t, ip); return !ok })
	if err := d.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := d.Wait(); err != nil {
		t.Fatalf("daemon exit: %v\n%s", err, log.String())
	}
	for _, f := range []string{sock, pid} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s left behind", f)
		}
	}
}

// TestReferenceInterop: the reference dhcp plugin speaks to knit's daemon
// and knit's plugin to the reference daemon (same net/rpc protocol), with
// equivalent results.
func TestReferenceInterop(t *testing.T) {
	testutil.RequireRoot(t)
	ref := testutil.RequireRef(t, "dhcp")
	seg := newBridgeSegment(t)
	srv := seg.startDnsmasq(t)
	knitSock := startDaemon(t)
	refSock := filepath.Join(t.TempDir(), "ref.sock")
	rd := exec.Command(ref, "daemon", "-socketpath", refSock)
	var rlog syncBuffer
	rd.Stdout, rd.Stderr = &rlog, &rlog
	if err := rd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rd.Process.Kill(); _, _ = rd.Process.Wait() })
	poll(t, 5*time.Second, "the reference daemon's socket", func() bool { _, err := os.Stat(refSock); return err == nil })
	shape := func(res *current.Result) string {
		r := *res
		r.IPs = []*current.IPConfig{{Address: net.IPNet{Mask: res.IPs[0].Address.Mask}, Gateway: res.IPs[0].Gateway}}
		r.DNS = types.DNS{}
		r.CNIVersion = ""
		b, _ := json.Marshal(&r)
		return string(b)
	}
	var shapes []string
	for i, pair := range []struct{ bin, sock string }{{ref, knitSock}, {filepath.Join(testutil.PluginDir(t), "dhcp"), refSock}} {
		c := seg.container(t)
		req := &cni.Request{Command: cni.CmdAdd, ContainerID: fmt.Sprintf("interop-%d", i), Netns: c.Path(), IfName: "eth0", Config: conf("1.0.0", pair.sock, "")}
		out, err := testutil.Exec(context.Background(), pair.bin, req)
		if err != nil {
			t.Fatalf("%s via %s: %v\n%s", pair.bin, pair.sock, err, rlog.String())
		}
		res := testutil.DecodeResult(t, req.Config, out)
		ip := assertLease(t, res)
		shapes = append(shapes, shape(res))
		req.Command = cni.CmdDel
		if _, err := testutil.Exec(context.Background(), pair.bin, req); err != nil {
			t.Fatalf("%s DEL: %v", pair.bin, err)
		}
		poll(t, 10*time.Second, "the release", func() bool { _, ok := srv.leaseFor(t, ip); return !ok })
	}
	if shapes[0] != shapes[1] {
		t.Fatalf("results differ:\nref plugin + knit daemon %s\nknit plugin + ref daemon %s", shapes[0], shapes[1])
	}
}

// TestAttachmentGoneDropsLease: when the container's namespace disappears
// without a DEL, the daemon notices at renewal and stops renewing.
func TestAttachmentGoneDropsLease(t *testing.T) {
	testutil.RequireRoot(t)
	seg := newBridgeSegment(t)
	srv := seg.startDnsmasq(t, "--dhcp-option=58,3")
	sock := startDaemon(t)
	c := seg.container(t)
	req := &cni.Request{ContainerID: "gone-1", Netns: c.Path(), IfName: "eth0", Config: conf("1.0.0", sock, "")}
	out, err := execPlugin(t, cni.CmdAdd, req)
	if err != nil {
		t.Fatal(err)
	}
	ip := assertLease(t, testutil.DecodeResult(t, req.Config, out))
	if err := c.H.LinkDel(chaintest.LinkByName(t, c, "eth0")); err != nil {
		t.Fatal(err)
	}
	before, _ := srv.leaseFor(t, ip)
	withPrev := addPrev(t, req.Config, out)
	poll(t, 10*time.Second, "the daemon to drop the lease", func() bool {
		_, err := execPlugin(t, cni.CmdCheck, &cni.Request{ContainerID: "gone-1", Netns: c.Path(), IfName: "eth0", Config: withPrev})
		return err != nil && strings.Contains(err.Error(), "no lease")
	})
	if l, _ := srv.leaseFor(t, ip); l.Expiry != before.Expiry {
		t.Fatal("the lease was renewed after its interface went away")
	}
}

// TestConcurrentAllocations: parallel ADDs for many attachments each get
// their own lease; STATUS reports the daemon ready.
func TestConcurrentAllocations(t *testing.T) {
	testutil.RequireRoot(t)
	seg := newBridgeSegment(t)
	srv := seg.startDnsmasq(t)
	sock := startDaemon(t)
	if _, err := execPlugin(t, cni.CmdStatus, &cni.Request{Config: conf("1.1.0", sock, "")}); err != nil {
		t.Fatalf("STATUS with a running daemon: %v", err)
	}
	const n = 8
	conts := make([]*testutil.NS, n)
	for i := range conts {
		conts[i] = seg.container(t)
	}
	ips := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := &cni.Request{ContainerID: fmt.Sprintf("par-%d", i), Netns: conts[i].Path(), IfName: "eth0", Config: conf("1.0.0", sock, "")}
			out, err := execPlugin(t, cni.CmdAdd, req)
			if err != nil {
				errs[i] = err
				return
			}
			res := testutil.DecodeResult(t, req.Config, out)
			ips[i] = res.IPs[0].Address.IP.String()
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, ip := range ips {
		if seen[ip] {
			t.Fatalf("address %s leased twice: %v", ip, ips)
		}
		seen[ip] = true
		if _, ok := srv.leaseFor(t, ip); !ok {
			t.Fatalf("dnsmasq has no lease for %s", ip)
		}
	}
}

// TestDaemonRestartKeepsLeases: a restarted daemon takes up the saved
// leases whose interfaces still exist and goes on renewing them; it drops
// the others.
func TestDaemonRestartKeepsLeases(t *testing.T) {
	testutil.RequireRoot(t)
	seg := newBridgeSegment(t)
	srv := seg.startDnsmasq(t, "--dhcp-option=58,3", "--dhcp-option=59,100")
	state := t.TempDir()
	sock := filepath.Join(t.TempDir(), "dhcp.sock")
	stop, _ := runDaemon(t, sock, state)
	t.Cleanup(stop)
	keep, lose := seg.container(t), seg.container(t)
	var keepIP string
	var keepOut []byte
	for _, c := range []*testutil.NS{keep, lose} {
		req := &cni.Request{ContainerID: "rs-" + filepath.Base(c.Path()), Netns: c.Path(), IfName: "eth0", Config: conf("1.1.0", sock, "")}
		out, err := execPlugin(t, cni.CmdAdd, req)
		if err != nil {
			t.Fatal(err)
		}
		if c == keep {
			keepOut, keepIP = out, assertLease(t, testutil.DecodeResult(t, req.Config, out))
		}
	}
	stop()
	// While the daemon is down, one attachment goes away.
	if err := lose.H.LinkDel(chaintest.LinkByName(t, lose, "eth0")); err != nil {
		t.Fatal(err)
	}
	before, _ := srv.leaseFor(t, keepIP)
	stop2, restored := runDaemon(t, sock, state)
	t.Cleanup(stop2)
	if restored != 1 {
		t.Fatalf("restored %d leases, want 1", restored)
	}
	poll(t, 15*time.Second, "the restarted daemon to renew", func() bool {
		l, ok := srv.leaseFor(t, keepIP)
		return ok && l.Expiry >= before.Expiry+2
	})
	req := &cni.Request{ContainerID: "rs-" + filepath.Base(keep.Path()), Netns: keep.Path(), IfName: "eth0", Config: conf("1.1.0", sock, "")}
	check := *req
	check.Config = addPrev(t, req.Config, keepOut)
	if _, err := execPlugin(t, cni.CmdCheck, &check); err != nil {
		t.Fatalf("CHECK after restart: %v", err)
	}
	if _, err := execPlugin(t, cni.CmdDel, req); err != nil {
		t.Fatal(err)
	}
	poll(t, 5*time.Second, "the release", func() bool { _, ok := srv.leaseFor(t, keepIP); return !ok })
	if ents, _ := os.ReadDir(state); len(ents) != 0 {
		t.Fatalf("state left: %v", ents)
	}
}
