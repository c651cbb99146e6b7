package chain

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/knit-cni/knit/pkg/cni"
)

// fake is a delegator that records calls and answers ADD with a result
// naming the plugin (or its prevResult plus one address).
type fake struct {
	mu    sync.Mutex
	calls []call
	fail  map[string]error // by plugin type
}

type call struct {
	typ  string
	cmd  cni.Command
	conf map[string]any
	req  cni.Request
}

func (f *fake) Delegate(_ context.Context, typ string, req *cni.Request) (types.Result, error) {
	var m map[string]any
	if err := json.Unmarshal(req.Config, &m); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.calls = append(f.calls, call{typ: typ, cmd: req.Command, conf: m, req: *req})
	f.mu.Unlock()
	if err := f.fail[typ]; err != nil {
		return nil, err
	}
	if req.Command != cni.CmdAdd {
		return nil, nil
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	if prev, ok := m["prevResult"]; ok {
		b, _ := json.Marshal(prev)
		if err := json.Unmarshal(b, res); err != nil {
			return nil, err
		}
	}
	n := len(res.IPs) + 1
	res.IPs = append(res.IPs, &current.IPConfig{Address: net.IPNet{IP: net.IPv4(10, 0, 0, byte(n)), Mask: net.CIDRMask(24, 32)}})
	return res, nil
}

const list = `{"cniVersion":"1.0.0","name":"net","plugins":[
	{"type":"a","capabilities":{"ips":true,"mac":false},"x":1},
	{"type":"b","capabilities":{"portMappings":true}},
	{"type":"c"}]}`

func TestParse(t *testing.T) {
	n, err := Parse([]byte(list))
	if err != nil {
		t.Fatal(err)
	}
	if n.Name != "net" || n.CNIVersion != "1.0.0" || len(n.Plugins) != 3 || n.Plugins[1].Type != "b" {
		t.Fatalf("parsed %+v", n)
	}
	if !n.HasCapability("ips") || n.HasCapability("mac") || !n.HasCapability("portMappings") {
		t.Error("capabilities")
	}
	single, err := Parse([]byte(`{"cniVersion":"0.3.1","name":"s","type":"bridge","capabilities":{"mac":true}}`))
	if err != nil || len(single.Plugins) != 1 || single.Plugins[0].Type != "bridge" || !single.HasCapability("mac") {
		t.Fatalf("single: %+v %v", single, err)
	}
	l, err := Parse([]byte(`{"name":"d","disableCheck":"true","disableGC":true,"plugins":[{"type":"x"}]}`))
	if err != nil || !l.DisableCheck || !l.DisableGC {
		t.Fatalf("flags: %+v %v", l, err)
	}
	// Marshal round-trips.
	b, err := n.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	n2, err := Parse(b)
	if err != nil || n2.Name != "net" || len(n2.Plugins) != 3 {
		t.Fatalf("round trip: %s %v", b, err)
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		conf, want string
		code       uint
	}{
		{`{`, "network config", 6},
		{`null`, "config", 7},
		{`[]`, "network config", 6},
		{`{"name":"x"}`, "type: missing plugin type", 7},
		{`{"type":"../x"}`, "type: \"../x\" is not a plugin name", 7},
		{`{"type":5}`, "type: not a string", 6},
		{`{"plugins":[]}`, "plugins: conflist has no plugins", 7},
		{`{"plugins":[{"type":"a"},{}]}`, "plugins[1].type: missing plugin type", 7},
		{`{"plugins":[1]}`, "plugins[0]: not a plugin object", 6},
		{`{"plugins":[{"type":"a","capabilities":[1]}]}`, "plugins[0].capabilities", 6},
		{`{"name":5,"plugins":[{"type":"a"}]}`, "name", 6},
		{`{"disableCheck":"maybe","plugins":[{"type":"a"}]}`, "network config", 6},
	}
	for _, c := range cases {
		_, err := Parse([]byte(c.conf))
		var ce *cni.Error
		if !errors.As(err, &ce) || ce.Code != c.code || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want code %d containing %q", c.conf, err, c.code, c.want)
		}
	}
}

func TestAddChainsAndFiltersRuntimeConfig(t *testing.T) {
	n, _ := Parse([]byte(list))
	f := &fake{}
	rt := Runtime{ContainerID: "c1", Netns: "/ns", IfName: "net1", Args: "K=V", Path: []string{"/bin"}}
	rc := map[string]any{"ips": []string{"10.0.0.9/24"}, "portMappings": []int{1}, "mac": "x"}
	res, err := n.Add(context.Background(), f, rt, rc)
	if err != nil {
		t.Fatal(err)
	}
	cur, _ := current.NewResultFromResult(res)
	if len(cur.IPs) != 3 {
		t.Errorf("final result has %d IPs, want 3 (each plugin added one to prevResult)", len(cur.IPs))
	}
	if len(f.calls) != 3 {
		t.Fatalf("%d calls", len(f.calls))
	}
	for i, c := range f.calls {
		if c.conf["name"] != "net" || c.conf["cniVersion"] != "1.0.0" {
			t.Errorf("call %d: name/version %v %v", i, c.conf["name"], c.conf["cniVersion"])
		}
		if _, ok := c.conf["capabilities"]; ok {
			t.Errorf("call %d: capabilities passed on", i)
		}
		if (i == 0) == (c.conf["prevResult"] != nil) {
			t.Errorf("call %d: prevResult %v", i, c.conf["prevResult"])
		}
		if c.req.ContainerID != "c1" || c.req.IfName != "net1" || c.req.Args != "K=V" || c.req.Netns != "/ns" {
			t.Errorf("call %d: env %+v", i, c.req)
		}
	}
	rc0, _ := f.calls[0].conf["runtimeConfig"].(map[string]any)
	rc1, _ := f.calls[1].conf["runtimeConfig"].(map[string]any)
	if len(rc0) != 1 || rc0["ips"] == nil || len(rc1) != 1 || rc1["portMappings"] == nil || f.calls[2].conf["runtimeConfig"] != nil {
		t.Errorf("runtimeConfig by capability: a %v, b %v, c %v", rc0, rc1, f.calls[2].conf["runtimeConfig"])
	}
	if f.calls[0].conf["x"] != float64(1) {
		t.Error("plugin keys lost")
	}
}

func TestAddFailureNamesPlugin(t *testing.T) {
	n, _ := Parse([]byte(list))
	f := &fake{fail: map[string]error{"b": cni.ConfigError("master", "no such link")}}
	_, err := n.Add(context.Background(), f, Runtime{}, nil)
	var pe *PluginError
	var ce *cni.Error
	if !errors.As(err, &pe) || pe.Index != 1 || pe.Type != "b" || !errors.As(err, &ce) || ce.Code != 7 {
		t.Fatalf("error %v", err)
	}
	if len(f.calls) != 2 {
		t.Errorf("ADD went on after a failure: %d calls", len(f.calls))
	}
}

func TestDelReverseTriesAll(t *testing.T) {
	n, _ := Parse([]byte(list))
	f := &fake{fail: map[string]error{"b": errors.New("boom"), "a": errors.New("second")}}
	prev := []byte(`{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.1/24"}]}`)
	err := n.Del(context.Background(), f, Runtime{}, nil, prev)
	if err == nil || !strings.Contains(err.Error(), "plugin b: boom") {
		t.Fatalf("error %v, want the first (b's)", err)
	}
	var order []string
	for _, c := range f.calls {
		order = append(order, c.typ)
		if c.cmd != cni.CmdDel || c.conf["prevResult"] == nil {
			t.Errorf("%s: cmd %s prevResult %v", c.typ, c.cmd, c.conf["prevResult"])
		}
	}
	if strings.Join(order, "") != "cba" {
		t.Errorf("DEL order %v", order)
	}
	// Before 0.4.0 DEL gets no prevResult.
	old, _ := Parse([]byte(`{"cniVersion":"0.3.1","name":"o","type":"a"}`))
	f = &fake{}
	if err := old.Del(context.Background(), f, Runtime{}, nil, prev); err != nil || f.calls[0].conf["prevResult"] != nil {
		t.Errorf("0.3.1 DEL: %v %v", err, f.calls[0].conf["prevResult"])
	}
}

func TestCheckGCStatusVersions(t *testing.T) {
	ctx := context.Background()
	prev := []byte(`{"cniVersion":"1.0.0"}`)
	old, _ := Parse([]byte(`{"cniVersion":"0.3.1","name":"o","type":"a"}`))
	if err := old.Check(ctx, &fake{}, Runtime{}, nil, prev); err == nil {
		t.Error("CHECK on 0.3.1 accepted")
	}
	n, _ := Parse([]byte(list))
	f := &fake{}
	if err := n.Check(ctx, f, Runtime{}, nil, prev); err != nil || len(f.calls) != 3 || f.calls[0].cmd != cni.CmdCheck {
		t.Errorf("CHECK: %v %d", err, len(f.calls))
	}
	if err := n.Check(ctx, f, Runtime{}, nil, nil); err == nil {
		t.Error("CHECK without cached result accepted")
	}
	dc, _ := Parse([]byte(`{"cniVersion":"1.0.0","name":"d","disableCheck":true,"plugins":[{"type":"a"}]}`))
	if err := dc.Check(ctx, &fake{fail: map[string]error{"a": errors.New("x")}}, Runtime{}, nil, nil); err != nil {
		t.Errorf("disableCheck: %v", err)
	}
	// GC and STATUS need 1.1.0.
	f = &fake{}
	if err := n.GC(ctx, f, nil, nil); err != nil || len(f.calls) != 0 {
		t.Errorf("GC on 1.0.0: %v %d calls", err, len(f.calls))
	}
	v11, _ := Parse([]byte(`{"cniVersion":"1.1.0","name":"g","plugins":[{"type":"a"},{"type":"b"}]}`))
	valid := []cni.Attachment{{ContainerID: "c1", IfName: "net1"}}
	if err := v11.GC(ctx, f, []string{"/bin"}, valid); err != nil || len(f.calls) != 2 || f.calls[0].cmd != cni.CmdGC {
		t.Fatalf("GC: %v %d", err, len(f.calls))
	}
	got, err := cni.ValidAttachments(f.calls[0].req.Config)
	if err != nil || len(got) != 1 || got[0] != valid[0] {
		t.Errorf("GC attachments %v %v", got, err)
	}
	f = &fake{fail: map[string]error{"b": cni.Errorf(cni.ErrNotReady, "not yet")}}
	err = v11.Status(ctx, f, nil)
	var ce *cni.Error
	if !errors.As(err, &ce) || ce.Code != cni.ErrNotReady {
		t.Errorf("STATUS: %v", err)
	}
}

func TestMergeCNIArgsAndPluginKey(t *testing.T) {
	n, _ := Parse([]byte(`{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"a","args":{"cni":{"keep":1,"x":1},"other":true}},{"type":"b"}]}`))
	if err := n.MergeCNIArgs(map[string]any{"x": 2, "ips": []string{"1.2.3.4"}}); err != nil {
		t.Fatal(err)
	}
	if err := n.SetPluginKey("deviceID", "0000:03:00.1"); err != nil {
		t.Fatal(err)
	}
	f := &fake{}
	if _, err := n.Add(context.Background(), f, Runtime{}, nil); err != nil {
		t.Fatal(err)
	}
	args := f.calls[0].conf["args"].(map[string]any)
	c := args["cni"].(map[string]any)
	if c["keep"] != float64(1) || c["x"] != float64(2) || c["ips"] == nil || args["other"] != true {
		t.Errorf("merged args %v", args)
	}
	if b := f.calls[1].conf["args"].(map[string]any)["cni"].(map[string]any); b["x"] != float64(2) {
		t.Errorf("second plugin args %v", b)
	}
	if f.calls[1].conf["deviceID"] != "0000:03:00.1" {
		t.Error("deviceID not set")
	}
	bad, _ := Parse([]byte(`{"type":"a","args":5}`))
	if err := bad.MergeCNIArgs(map[string]any{"x": 1}); err == nil {
		t.Error("non-object args accepted")
	}
}

func TestEncodeResultVersions(t *testing.T) {
	res := &current.Result{CNIVersion: "1.0.0", IPs: []*current.IPConfig{{Address: net.IPNet{IP: net.IPv4(10, 0, 0, 1), Mask: net.CIDRMask(24, 32)}}}}
	for _, v := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		n := &Network{CNIVersion: v}
		b, err := n.EncodeResult(res)
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		hasVersion := strings.Contains(string(b), `"version":"4"`)
		if hasVersion != strings.HasPrefix(v, "0.") || !strings.Contains(string(b), `"cniVersion":"`+v+`"`) {
			t.Errorf("%s: %s", v, b)
		}
		back, err := n.DecodeResult(b)
		if err != nil || back.Version() != v {
			t.Errorf("%s: decode %v %v", v, back, err)
		}
	}
}
