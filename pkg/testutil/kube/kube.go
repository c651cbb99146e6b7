// Package kube starts a real Kubernetes control plane for integration
// tests: etcd (Debian's /usr/bin/etcd) and kube-apiserver (built into
// _output/bin by `make k8s-binaries`), on free loopback ports, with
// certificates generated here and an admin client-certificate kubeconfig.
// No kubelet, controller-manager or scheduler: tests create pods with
// spec.nodeName set and play the runtime themselves.
package kube

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/knit-cni/knit/pkg/testutil"
)

// Binaries locates etcd and kube-apiserver: $KNIT_ETCD and
// $KNIT_KUBE_APISERVER if set, else etcd on PATH (or /usr/bin/etcd) and
// _output/bin/kube-apiserver in the repository.
func Binaries() (etcd, apiserver string, err error) {
	etcd = os.Getenv("KNIT_ETCD")
	if etcd == "" {
		if p, err := exec.LookPath("etcd"); err == nil {
			etcd = p
		} else {
			etcd = "/usr/bin/etcd"
		}
	}
	apiserver = os.Getenv("KNIT_KUBE_APISERVER")
	if apiserver == "" {
		apiserver = filepath.Join(testutil.RepoRoot(), "_output", "bin", "kube-apiserver")
	}
	for _, b := range []string{etcd, apiserver} {
		if _, err := os.Stat(b); err != nil {
			return "", "", fmt.Errorf("%s not found (apt-get install etcd-server; make k8s-binaries): %w", b, err)
		}
	}
	return etcd, apiserver, nil
}

// Cluster is a running etcd + kube-apiserver.
type Cluster struct {
	Dir        string
	Kubeconfig string
	Rest       *rest.Config
	Client     kubernetes.Interface

	pki        *pki
	apiBin     string
	apiPort    int
	etcdURL    string
	mu         sync.Mutex
	etcd, api  *exec.Cmd
	apiExited  chan struct{}
	etcdExited chan struct{}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start runs a control plane in dir until Stop.
func Start(ctx context.Context, dir string) (*Cluster, error) {
	etcdBin, apiBin, err := Binaries()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p, err := newPKI(dir)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, pki: p, apiBin: apiBin}
	if err := c.startEtcd(ctx, etcdBin); err != nil {
		return nil, err
	}
	if c.apiPort, err = freePort(); err != nil {
		c.Stop()
		return nil, err
	}
	if err := c.writeKubeconfig(); err != nil {
		c.Stop()
		return nil, err
	}
	if err := c.StartAPIServer(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) startEtcd(ctx context.Context, bin string) error {
	cport, err := freePort()
	if err != nil {
		return err
	}
	pport, err := freePort()
	if err != nil {
		return err
	}
	c.etcdURL = fmt.Sprintf("http://127.0.0.1:%d", cport)
	peer := fmt.Sprintf("http://127.0.0.1:%d", pport)
	cmd := exec.Command(bin, "--name", "knit-test", "--data-dir", filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls", c.etcdURL, "--advertise-client-urls", c.etcdURL,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "knit-test="+peer, "--initial-cluster-state", "new",
		"--unsafe-no-fsync", "--log-level", "warn")
	exited, err := c.spawn(cmd, "etcd.log")
	if err != nil {
		return err
	}
	c.etcd, c.etcdExited = cmd, exited
	return poll(ctx, 30*time.Second, exited, "etcd", filepath.Join(c.Dir, "etcd.log"), func() bool {
		conn, err := net.DialTimeout("tcp", strings.TrimPrefix(c.etcdURL, "http://"), time.Second)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
}

// spawn starts cmd in its own process group with output to a log file in
// Dir, and returns a channel closed when it exits.
func (c *Cluster) spawn(cmd *exec.Cmd, logName string) (chan struct{}, error) {
	logf, err := os.OpenFile(filepath.Join(c.Dir, logName), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	return exited, nil
}

// poll waits for ready, failing early if the process exits.
func poll(ctx context.Context, timeout time.Duration, exited <-chan struct{}, what, logPath string, ready func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !ready() {
		select {
		case <-exited:
			return fmt.Errorf("%s exited during startup: %s", what, tail(logPath))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %v: %s", what, timeout, tail(logPath))
		case <-tick.C:
		}
	}
	return nil
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// StartAPIServer (re)starts kube-apiserver on its port and waits for
// /readyz.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pki
	cmd := exec.Command(c.apiBin,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+strconv.Itoa(c.apiPort),
		"--etcd-servers="+c.etcdURL,
		"--tls-cert-file="+p.serverCert, "--tls-private-key-file="+p.serverKey,
		"--client-ca-file="+p.caCert,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+p.saPub, "--service-account-signing-key-file="+p.saKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=RBAC", "--allow-privileged=true",
		// No controller-manager creates the "default" service accounts.
		"--disable-admission-plugins=ServiceAccount",
		"--cert-dir="+filepath.Join(c.Dir, "apiserver-certs"),
		"--profiling=false", "--endpoint-reconciler-type=none", "--v=0")
	exited, err := c.spawn(cmd, "kube-apiserver.log")
	if err != nil {
		return err
	}
	c.api, c.apiExited = cmd, exited
	hc, err := rest.HTTPClientFor(c.Rest)
	if err != nil {
		return err
	}
	hc.Timeout = 2 * time.Second
	return poll(ctx, 90*time.Second, exited, "kube-apiserver", filepath.Join(c.Dir, "kube-apiserver.log"), func() bool {
		resp, err := hc.Get(c.Rest.Host + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// StopAPIServer stops kube-apiserver (etcd keeps running).
func (c *Cluster) StopAPIServer() {
	c.mu.Lock()
	defer c.mu.Unlock()
	stop(c.api, c.apiExited)
	c.api = nil
}

func stop(cmd *exec.Cmd, exited chan struct{}) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
}

// Stop stops everything.
func (c *Cluster) Stop() {
	c.StopAPIServer()
	stop(c.etcd, c.etcdExited)
	c.etcd = nil
}

func (c *Cluster) writeKubeconfig() error {
	host := "https://127.0.0.1:" + strconv.Itoa(c.apiPort)
	c.Rest = &rest.Config{Host: host, TLSClientConfig: rest.TLSClientConfig{
		CAData: c.pki.caPEM, CertData: c.pki.adminPEM, KeyData: c.pki.adminKP}, QPS: 200, Burst: 400}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["knit-test"] = &clientcmdapi.Cluster{Server: host, CertificateAuthorityData: c.pki.caPEM}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: c.pki.adminPEM, ClientKeyData: c.pki.adminKP}
	kc.Contexts["knit-test"] = &clientcmdapi.Context{Cluster: "knit-test", AuthInfo: "admin"}
	kc.CurrentContext = "knit-test"
	c.Kubeconfig = filepath.Join(c.Dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, c.Kubeconfig); err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(c.Rest)
	if err != nil {
		return err
	}
	c.Client = cs
	return nil
}

// shared is the control plane tests of one package share (started on
// first use, stopped by Main).
var shared struct {
	once sync.Once
	c    *Cluster
	err  error
}

// Shared returns the package's shared control plane, starting it on first
// use. The test is skipped when etcd or kube-apiserver are missing (make
// test builds them), and fails if they are present but do not start.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	if _, _, err := Binaries(); err != nil {
		t.Skipf("control plane binaries missing: %v", err)
	}
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "knit-kube-")
		if err != nil {
			shared.err = err
			return
		}
		shared.c, shared.err = Start(context.Background(), dir)
	})
	if shared.err != nil {
		t.Fatalf("control plane: %v", shared.err)
	}
	return shared.c
}

// Main runs a package's tests and stops the shared control plane after
// them: call it from TestMain.
func Main(m *testing.M) int {
	code := m.Run()
	if shared.c != nil {
		shared.c.Stop()
		if code == 0 {
			os.RemoveAll(shared.c.Dir)
		}
	}
	return code
}
