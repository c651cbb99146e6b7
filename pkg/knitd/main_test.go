package knitd_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/knit-cni/knit/pkg/knitd"
	"github.com/knit-cni/knit/pkg/testutil/kube"
)

// The test binary doubles as fake CNI plugins (installed in the test bin
// dir as "recorder" and "blocker") and as a knitd subprocess (for the
// tests that kill knitd).
func TestMain(m *testing.M) {
	switch filepath.Base(os.Args[0]) {
	case "recorder", "blocker":
		os.Exit(fakePlugin(filepath.Base(os.Args[0])))
	}
	if os.Getenv(subprocessEnv) != "" {
		os.Exit(runKnitdSubprocess())
	}
	code := kube.Main(m)
	if bins.dir != "" {
		os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

// fakeConf is the fake plugins' config.
type fakeConf struct {
	CNIVersion string          `json:"cniVersion"`
	PrevResult json.RawMessage `json:"prevResult"`
	// Record is a file every call appends its environment and stdin to.
	Record string `json:"record"`
	// Started is created when a blocker's ADD begins; it then blocks
	// reading Fifo unless Release exists.
	Started string `json:"started"`
	Fifo    string `json:"fifo"`
	Release string `json:"release"`
}

// record is one call seen by the recorder.
type record struct {
	Command string          `json:"command"`
	IfName  string          `json:"ifname"`
	Args    string          `json:"args"`
	Config  json.RawMessage `json:"config"`
}

func fakePlugin(kind string) int {
	stdin, _ := io.ReadAll(os.Stdin)
	var c fakeConf
	if err := json.Unmarshal(stdin, &c); err != nil {
		fmt.Printf(`{"cniVersion":"1.0.0","code":6,"msg":%q}`, err.Error())
		return 1
	}
	cmd := os.Getenv("CNI_COMMAND")
	if cmd == "VERSION" {
		fmt.Print(`{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}`)
		return 0
	}
	if c.Record != "" {
		b, _ := json.Marshal(record{Command: cmd, IfName: os.Getenv("CNI_IFNAME"), Args: os.Getenv("CNI_ARGS"), Config: stdin})
		f, err := os.OpenFile(c.Record, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err == nil {
			_, _ = f.Write(append(b, '\n'))
			f.Close()
		}
	}
	if cmd != "ADD" {
		return 0
	}
	if kind == "blocker" {
		_ = os.WriteFile(c.Started, nil, 0o600)
		if _, err := os.Stat(c.Release); errors.Is(err, os.ErrNotExist) {
			if f, err := os.Open(c.Fifo); err == nil { // blocks until a writer opens
				_, _ = io.ReadAll(f)
				f.Close()
			}
		}
	}
	if len(c.PrevResult) > 0 {
		os.Stdout.Write(c.PrevResult)
		return 0
	}
	fmt.Printf(`{"cniVersion":%q,"interfaces":[{"name":%q,"sandbox":%q}],"ips":[]}`,
		c.CNIVersion, os.Getenv("CNI_IFNAME"), os.Getenv("CNI_NETNS"))
	return 0
}

const subprocessEnv = "KNIT_TEST_KNITD_SUBPROCESS"

// subprocessConfig is what a knitd subprocess gets through its
// environment.
type subprocessConfig struct {
	Config     knitd.Config `json:"config"`
	Kubeconfig string       `json:"kubeconfig"`
	Host       string       `json:"host"`
}

func runKnitdSubprocess() int {
	var sc subprocessConfig
	if err := json.Unmarshal([]byte(os.Getenv(subprocessEnv)), &sc); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	rc, err := knitd.RestConfig(sc.Kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cfg := sc.Config
	cfg.SetDefaults()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := knitd.New(&cfg, knitd.Options{Rest: rc, Registry: testRegistry(sc.Host), Logger: log, HostNetns: sc.Host})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := d.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
