package testutil

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/knit-cni/knit/pkg/cni"
)

// Exec runs a plugin binary the way a runtime does: CNI_* environment,
// config on stdin. It returns stdout, and on a non-zero exit the decoded
// CNI error (or a plain error when stdout is not one).
func Exec(ctx context.Context, bin string, req *cni.Request) ([]byte, error) {
	return run(exec.CommandContext(ctx, bin), bin, req)
}

// run runs cmd (bin, or a wrapper around it) with req's CNI environment
// and config; see Exec.
func run(cmd *exec.Cmd, bin string, req *cni.Request) ([]byte, error) {
	path := req.Path
	if len(path) == 0 {
		path = []string{filepath.Dir(bin)} // delegates (IPAM) live beside the plugin
	}
	cmd.Env = []string{
		"CNI_COMMAND=" + string(req.Command),
		"CNI_CONTAINERID=" + req.ContainerID,
		"CNI_NETNS=" + req.Netns,
		"CNI_IFNAME=" + req.IfName,
		"CNI_ARGS=" + req.Args,
		"CNI_PATH=" + strings.Join(path, ":"),
		"PATH=" + os.Getenv("PATH"),
	}
	cmd.Stdin = bytes.NewReader(req.Config)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err == nil {
		return out.Bytes(), nil
	}
	var te types.Error
	if jerr := json.Unmarshal(out.Bytes(), &te); jerr == nil && te.Code != 0 {
		return out.Bytes(), &te
	}
	return out.Bytes(), fmt.Errorf("%s %s: %w: stdout %q stderr %q", bin, req.Command, err, out.String(), errb.String())
}

// ExecAdd runs ADD and decodes the result as the newest version.
func ExecAdd(t testing.TB, bin string, req *cni.Request) *current.Result {
	t.Helper()
	req.Command = cni.CmdAdd
	out, err := Exec(context.Background(), bin, req)
	if err != nil {
		t.Fatalf("ADD %s: %v", bin, err)
	}
	return DecodeResult(t, req.Config, out)
}

// DecodeResult parses a printed result in the config's version and
// converts it to the newest one.
func DecodeResult(t testing.TB, config, out []byte) *current.Result {
	t.Helper()
	var nc cni.NetConf
	if err := json.Unmarshal(config, &nc); err != nil {
		t.Fatalf("config: %v", err)
	}
	res, err := version.NewResult(nc.CNIVersion, out)
	if err != nil {
		t.Fatalf("decoding result %s: %v", out, err)
	}
	cur, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatalf("converting result: %v", err)
	}
	return cur
}

// Call runs a plugin in process with a registry for its delegates, as
// knitd does.
func Call(ctx context.Context, reg cni.Registry, pluginType string, req *cni.Request) (types.Result, error) {
	p, ok := reg.Lookup(pluginType)
	if !ok {
		return nil, fmt.Errorf("no built-in plugin %q", pluginType)
	}
	req.Delegate = reg
	return cni.Call(ctx, p, req)
}
