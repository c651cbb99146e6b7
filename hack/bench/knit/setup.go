package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadclient "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/clientset/versioned"
	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"

	"github.com/knit-cni/knit/pkg/confgen"
	"github.com/knit-cni/knit/pkg/testutil"
	"github.com/knit-cni/knit/pkg/testutil/kube"
)

const (
	metricsAddr = "127.0.0.1:19191" // the bench's own namespace: no clash
	node        = "bench-node"
	ns          = "bench"
)

type bench struct {
	work    string
	knitDir string
	refDir  string
	cluster *kube.Cluster
	nads    nadclient.Interface
	knitd   *exec.Cmd
	exited  chan struct{}
	confDir string
	knit    *libcni.CNIConfig
	ref     *libcni.CNIConfig
	refNets []*libcni.NetworkConfigList // cluster, bridge, macvlan
	seq     int
	profile string // write a CPU profile of knitd during the latency loop here
}

func setup(ctx context.Context, knitDir, refDir, profile string) (*bench, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("run as root, in a network namespace of its own (see the package doc)")
	}
	if err := hostSetup(); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "knitbench-")
	if err != nil {
		return nil, err
	}
	b := &bench{work: work, knitDir: knitDir, refDir: refDir, confDir: filepath.Join(work, "net.d"), profile: profile}
	if b.cluster, err = kube.Start(ctx, filepath.Join(work, "kube")); err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	if b.nads, err = nadclient.NewForConfig(b.cluster.Rest); err != nil {
		return nil, err
	}
	if err := b.installCRD(ctx); err != nil {
		return nil, err
	}
	if _, err := b.cluster.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	if err := b.writeConfs(); err != nil {
		return nil, err
	}
	if err := b.startKnitd(); err != nil {
		b.close()
		return nil, err
	}
	b.knit = libcni.NewCNIConfigWithCacheDir([]string{knitDir}, filepath.Join(work, "libcni-knit"), nil)
	b.ref = libcni.NewCNIConfigWithCacheDir([]string{refDir}, filepath.Join(work, "libcni-ref"), nil)
	for _, n := range []struct{ name, ipam string }{
		{"br-net", b.ipam("knit", "10.10.0.0/16")},
		{"mv-net", b.ipam("knit", "10.20.0.0/16")},
	} {
		var conf string
		if n.name == "br-net" {
			conf = fmt.Sprintf(`{"cniVersion":"0.3.1","type":"bridge","bridge":"br1",%s}`, n.ipam)
		} else {
			conf = fmt.Sprintf(`{"cniVersion":"0.3.1","type":"macvlan","master":"eth0","mode":"bridge",%s}`, n.ipam)
		}
		if err := b.nad(ctx, n.name, conf); err != nil {
			b.close()
			return nil, err
		}
	}
	return b, nil
}

// hostSetup brings lo up (a fresh namespace has it down: the control plane
// listens on 127.0.0.1) and gives the "host" an eth0 for macvlan.
func hostSetup() error {
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	if _, err := netlink.LinkByName("eth0"); err == nil {
		return errors.New("this namespace has an eth0: run in a namespace of its own (unshare --net)")
	}
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0-peer"}); err != nil {
		return err
	}
	for _, n := range []string{"eth0", "eth0-peer"} {
		l, err := netlink.LinkByName(n)
		if err == nil {
			err = netlink.LinkSetUp(l)
		}
		if err != nil {
			return err
		}
	}
	return os.MkdirAll("/run/netns", 0o755)
}

func (b *bench) ipam(impl, subnet string) string {
	return fmt.Sprintf(`"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":%q}]]}`,
		filepath.Join(b.work, "ipam-"+impl), subnet)
}

// writeConfs writes knit's cluster network (which knitd bases
// 00-knit.conflist on) and the reference side's three networks.
func (b *bench) writeConfs() error {
	if err := os.MkdirAll(b.confDir, 0o755); err != nil {
		return err
	}
	cluster := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"bridge","bridge":"cni0","isGateway":true,%s}]}`,
		b.ipam("knit", "10.244.0.0/16"))
	if err := os.WriteFile(filepath.Join(b.confDir, "10-cluster.conflist"), []byte(cluster), 0o644); err != nil {
		return err
	}
	refs := []string{
		fmt.Sprintf(`{"cniVersion":"1.0.0","name":"rcbr0","plugins":[{"type":"bridge","bridge":"rcni0","isGateway":true,%s}]}`, b.ipam("ref", "10.245.0.0/16")),
		fmt.Sprintf(`{"cniVersion":"0.3.1","name":"rbr-net","plugins":[{"type":"bridge","bridge":"rbr1",%s}]}`, b.ipam("ref", "10.11.0.0/16")),
		fmt.Sprintf(`{"cniVersion":"0.3.1","name":"rmv-net","plugins":[{"type":"macvlan","master":"eth0","mode":"bridge",%s}]}`, b.ipam("ref", "10.21.0.0/16")),
	}
	for _, r := range refs {
		l, err := libcni.ConfListFromBytes([]byte(r))
		if err != nil {
			return err
		}
		b.refNets = append(b.refNets, l)
	}
	return nil
}

func (b *bench) installCRD(ctx context.Context) error {
	data, err := os.ReadFile(filepath.Join(testutil.RepoRoot(), "deploy", "crd.yaml"))
	if err != nil {
		return err
	}
	var crd apiextv1.CustomResourceDefinition
	if err := yaml.Unmarshal(data, &crd); err != nil {
		return err
	}
	cs, err := apiextclient.NewForConfig(b.cluster.Rest)
	if err != nil {
		return err
	}
	if _, err := cs.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, &crd, metav1.CreateOptions{}); err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := b.nads.K8sCniCncfIoV1().NetworkAttachmentDefinitions("default").List(ctx, metav1.ListOptions{})
		return err == nil, nil
	})
}

func (b *bench) nad(ctx context.Context, name, conf string) error {
	_, err := b.nads.K8sCniCncfIoV1().NetworkAttachmentDefinitions(ns).Create(ctx, &nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: conf}}, metav1.CreateOptions{})
	return err
}

func (b *bench) startKnitd() error {
	cfg := map[string]any{"nodeName": node, "kubeconfig": b.cluster.Kubeconfig, "confDir": b.confDir,
		"binDir": b.knitDir, "cacheDir": filepath.Join(b.work, "cache"), "socket": filepath.Join(b.work, "run", "knitd.sock"),
		"logLevel": "warn", "logFile": filepath.Join(b.work, "knitd.log"), "metricsAddr": metricsAddr,
		"enablePprof": b.profile != ""}
	data, _ := json.Marshal(cfg)
	path := filepath.Join(b.work, "knitd.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return err
	}
	b.knitd = exec.Command(filepath.Join(b.knitDir, "knitd"), "-config", path)
	b.knitd.Stderr = os.Stderr
	b.knitd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.knitd.Start(); err != nil {
		return fmt.Errorf("knitd: %w", err)
	}
	b.exited = make(chan struct{})
	go func() { _ = b.knitd.Wait(); close(b.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(b.confDir, confgen.FileName)); err == nil {
			if c, err := net.Dial("unix", cfg["socket"].(string)); err == nil {
				c.Close()
				return nil
			}
		}
		select {
		case <-b.exited:
			return errors.New("knitd exited at startup")
		default:
		}
		if time.Now().After(deadline) {
			return errors.New("knitd did not come up")
		}
		time.Sleep(20 * time.Millisecond) // polling for readiness with a deadline
	}
}

func (b *bench) close() {
	if b.knitd != nil && b.knitd.Process != nil {
		_ = b.knitd.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.exited:
		case <-time.After(15 * time.Second):
			_ = b.knitd.Process.Kill()
		}
	}
	if b.cluster != nil {
		b.cluster.Stop()
	}
	os.RemoveAll(b.work)
}

// sandbox is a pod's network namespace, bind-mounted under /run/netns.
type sandbox struct{ path string }

func (b *bench) newSandbox() (*sandbox, error) {
	b.seq++
	path := fmt.Sprintf("/run/netns/knitbench-%d", b.seq)
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	f.Close()
	var wg sync.WaitGroup
	var merr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		runtime.LockOSThread()
		orig, err := vns.Get()
		if err != nil {
			merr = err
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			merr = err
			return
		}
		merr = unix.Mount(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), path, "none", unix.MS_BIND, "")
		if err := vns.Set(orig); err != nil {
			merr = errors.Join(merr, err)
			return // the thread stays locked and dies with the goroutine
		}
		runtime.UnlockOSThread()
	}()
	wg.Wait()
	if merr != nil {
		return nil, merr
	}
	return &sandbox{path: path}, nil
}

func (s *sandbox) remove() {
	_ = unix.Unmount(s.path, unix.MNT_DETACH)
	_ = os.Remove(s.path)
}
