package delegate

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/knit-cni/knit/pkg/attachcache"
	"github.com/knit-cni/knit/pkg/cni"
)

// fake answers ADD with one address and records (type, cmd, ifname).
type fake struct {
	mu    sync.Mutex
	calls []string
	fail  map[string]error // "type/CMD"
}

func (f *fake) Delegate(_ context.Context, typ string, req *cni.Request) (types.Result, error) {
	f.mu.Lock()
	f.calls = append(f.calls, typ+"/"+string(req.Command)+"/"+req.IfName)
	f.mu.Unlock()
	if err := f.fail[typ+"/"+string(req.Command)]; err != nil {
		return nil, err
	}
	if req.Command != cni.CmdAdd {
		return nil, nil
	}
	return &current.Result{CNIVersion: "1.0.0", IPs: []*current.IPConfig{{Address: net.IPNet{IP: net.IPv4(10, 0, 0, 1), Mask: net.CIDRMask(24, 32)}}}}, nil
}

func conf(typ string) json.RawMessage {
	return json.RawMessage(`{"cniVersion":"1.0.0","name":"` + typ + `","plugins":[{"type":"` + typ + `"}]}`)
}

func newEntry() *attachcache.Entry {
	return &attachcache.Entry{ContainerID: "c1", IfName: "eth0", Netns: "/ns", Attachments: []attachcache.Attachment{
		{Network: "cluster", IfName: "eth0", Default: true, Config: conf("a")},
		{Network: "ns/one", IfName: "net1", Config: conf("b")},
		{Network: "ns/two", IfName: "net2", Config: conf("c")}}}
}

func TestAddDel(t *testing.T) {
	s := &attachcache.Store{Dir: t.TempDir()}
	f := &fake{}
	r := &Runner{Delegator: f, Store: s}
	e := newEntry()
	res, err := r.Add(context.Background(), e)
	if err != nil || len(res) != 3 {
		t.Fatalf("ADD: %v", err)
	}
	got, err := s.Read("c1", "eth0")
	if err != nil || !got.Complete || len(got.Attachments[2].Result) == 0 {
		t.Fatalf("cache after ADD: %+v %v", got, err)
	}
	if strings.Join(f.calls, " ") != "a/ADD/eth0 b/ADD/net1 c/ADD/net2" {
		t.Errorf("ADD calls %v", f.calls)
	}
	f.calls = nil
	if err := r.Check(context.Background(), got); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	f.calls = nil
	if err := r.Del(context.Background(), got); err != nil {
		t.Fatal(err)
	}
	if strings.Join(f.calls, " ") != "c/DEL/net2 b/DEL/net1 a/DEL/eth0" {
		t.Errorf("DEL calls %v", f.calls)
	}
	if _, err := s.Read("c1", "eth0"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cache left after DEL: %v", err)
	}
}

// A failing attachment undoes the ones made before it (and itself), in
// reverse, names the failing network and leaves no cache.
func TestAddRollback(t *testing.T) {
	s := &attachcache.Store{Dir: t.TempDir()}
	f := &fake{fail: map[string]error{"c/ADD": cni.ConfigError("master", "gone")}}
	r := &Runner{Delegator: f, Store: s}
	_, err := r.Add(context.Background(), newEntry())
	var ae *AttachError
	var ce *cni.Error
	if !errors.As(err, &ae) || ae.Network != "ns/two" || ae.IfName != "net2" || !errors.As(err, &ce) || ce.Code != 7 {
		t.Fatalf("error %v", err)
	}
	want := "a/ADD/eth0 b/ADD/net1 c/ADD/net2 c/DEL/net2 b/DEL/net1 a/DEL/eth0"
	if strings.Join(f.calls, " ") != want {
		t.Errorf("calls %v, want %s", f.calls, want)
	}
	if l, _ := s.List(); len(l) != 0 {
		t.Errorf("cache left: %+v", l)
	}
}

// When the rollback itself fails, the entry stays (incomplete) so the
// runtime's DEL finishes the job.
func TestAddRollbackFailureKeepsEntry(t *testing.T) {
	s := &attachcache.Store{Dir: t.TempDir()}
	f := &fake{fail: map[string]error{"c/ADD": errors.New("add fails"), "a/DEL": errors.New("del fails")}}
	r := &Runner{Delegator: f, Store: s}
	_, err := r.Add(context.Background(), newEntry())
	if err == nil || !strings.Contains(err.Error(), "cleanup incomplete") {
		t.Fatalf("error %v", err)
	}
	e, err := s.Read("c1", "eth0")
	if err != nil || e.Complete {
		t.Fatalf("entry %+v %v", e, err)
	}
	delete(f.fail, "a/DEL")
	if err := r.Del(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read("c1", "eth0"); !errors.Is(err, os.ErrNotExist) {
		t.Error("entry left after the retried DEL")
	}
}

// DEL tries every attachment, reports the first error, keeps the entry.
func TestDelTriesAll(t *testing.T) {
	s := &attachcache.Store{Dir: t.TempDir()}
	f := &fake{}
	r := &Runner{Delegator: f, Store: s}
	e := newEntry()
	if _, err := r.Add(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	f.calls, f.fail = nil, map[string]error{"c/DEL": errors.New("c fails"), "a/DEL": errors.New("a fails")}
	err := r.Del(context.Background(), e)
	if err == nil || !strings.Contains(err.Error(), "ns/two") || strings.Contains(err.Error(), "a fails") {
		t.Errorf("error %v, want the first failure (ns/two)", err)
	}
	if len(f.calls) != 3 {
		t.Errorf("DEL stopped early: %v", f.calls)
	}
	if _, err := s.Read("c1", "eth0"); err != nil {
		t.Errorf("entry removed despite failures: %v", err)
	}
}

// AfterAdd failing rolls the ADD back too.
func TestAfterAddFailure(t *testing.T) {
	s := &attachcache.Store{Dir: t.TempDir()}
	f := &fake{}
	r := &Runner{Delegator: f, Store: s, AfterAdd: func(_ context.Context, _ *attachcache.Entry, i int, _ types.Result) error {
		if i == 1 {
			return errors.New("route trouble")
		}
		return nil
	}}
	_, err := r.Add(context.Background(), newEntry())
	if err == nil || !strings.Contains(err.Error(), "ns/one") {
		t.Fatalf("error %v", err)
	}
	if strings.Join(f.calls, " ") != "a/ADD/eth0 b/ADD/net1 b/DEL/net1 a/DEL/eth0" {
		t.Errorf("calls %v", f.calls)
	}
}

func TestCheckIncomplete(t *testing.T) {
	r := &Runner{Delegator: &fake{}, Store: &attachcache.Store{Dir: t.TempDir()}}
	err := r.Check(context.Background(), newEntry())
	var ce *cni.Error
	if !errors.As(err, &ce) || ce.Code != types.ErrTryAgainLater {
		t.Errorf("CHECK of an incomplete entry: %v", err)
	}
}

// CHECK skips networks that predate CHECK (spec < 0.4.0).
func TestCheckSkipsOldVersions(t *testing.T) {
	f := &fake{}
	r := &Runner{Delegator: f, Store: &attachcache.Store{Dir: t.TempDir()}}
	e := newEntry()
	e.Attachments[1].Config = json.RawMessage(`{"cniVersion":"0.3.1","name":"b","plugins":[{"type":"b"}]}`)
	if _, err := r.Add(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	f.calls = nil
	if err := r.Check(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	if strings.Join(f.calls, " ") != "a/CHECK/eth0 c/CHECK/net2" {
		t.Errorf("CHECK calls %v", f.calls)
	}
}
