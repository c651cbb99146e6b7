package ipargs

import (
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/knit-cni/knit/pkg/cni"
)

func TestLoadEnv(t *testing.T) {
	cases := []struct {
		args    string
		gateway bool
		want    Env
		err     string
	}{
		{"", false, Env{}, ""},
		{"IP=10.0.0.1", false, Env{IPs: []string{"10.0.0.1"}}, ""},
		{"IP=10.0.0.1, fd00::1 ,10.0.0.2/24", false, Env{IPs: []string{"10.0.0.1", "fd00::1", "10.0.0.2/24"}}, ""},
		{"IP=10.0.0.1/24;GATEWAY=10.0.0.254", true, Env{IPs: []string{"10.0.0.1/24"}, Gateways: []string{"10.0.0.254"}}, ""},
		{"GATEWAY=10.0.0.254", false, Env{}, "unknown args"},
		{"K8S_POD_NAME=x", false, Env{}, "unknown args"},
		{"IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.0.0.1", false, Env{IPs: []string{"10.0.0.1"}}, ""},
		{"IgnoreUnknown=True;GATEWAY=x", false, Env{}, ""},
		{"IgnoreUnknown=maybe", false, Env{}, "boolean"},
		{"IP", false, Env{}, "invalid pair"},
		{"IP=a=b", false, Env{}, "invalid pair"},
		{"ip=10.0.0.1", false, Env{}, "unknown args"}, // keys are case-sensitive, as in types.LoadArgs
		{"IP=", false, Env{}, ""},
	}
	for _, c := range cases {
		got, err := LoadEnv(c.args, c.gateway)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || cni.AsTypesError(err).Code != types.ErrInvalidEnvironmentVariables {
				t.Errorf("%q: error %v, want code 4 with %q", c.args, err, c.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%q: %+v, %v; want %+v", c.args, got, err, c.want)
		}
	}
}

func TestParse(t *testing.T) {
	cases := []struct {
		in       string
		needMask bool
		want     string // Prefix().String(), or "" for an error
		bits     int
	}{
		{"10.0.0.5", false, "10.0.0.5/32", -1},
		{"10.0.0.5/24", false, "10.0.0.5/24", 24},
		{"fd00::5", false, "fd00::5/128", -1},
		{"fd00::5/64", true, "fd00::5/64", 64},
		{"::ffff:10.0.0.5", false, "10.0.0.5/32", -1},
		{"::ffff:10.0.0.5/120", true, "10.0.0.5/24", 24},
		{" 10.0.0.5 ", false, "10.0.0.5/32", -1},
		{"10.0.0.5", true, "", 0},
		{"::ffff:10.0.0.5/64", true, "", 0},
		{"fe80::1%eth0", false, "", 0},
		{"fe80::1%eth0/64", true, "", 0},
		{"10.0.0.256", false, "", 0},
		{"010.0.0.1", false, "", 0},
		{"10.0.0.1/33", false, "", 0},
		{"", false, "", 0},
	}
	for _, c := range cases {
		for _, src := range []string{SourceRuntimeConfig, SourceEnv} {
			a, err := Parse(src, c.in, c.needMask)
			if c.want == "" {
				wantCode := types.ErrInvalidNetworkConfig
				if src == SourceEnv {
					wantCode = types.ErrInvalidEnvironmentVariables
				}
				if err == nil || cni.AsTypesError(err).Code != wantCode || !strings.HasPrefix(err.Error(), src+": ") {
					t.Errorf("%s %q: %v, want code %d naming the source", src, c.in, err, wantCode)
				}
				continue
			}
			if err != nil || a.Prefix().String() != c.want || a.Bits != c.bits || a.Source != src {
				t.Errorf("%s %q: %+v %v, want %s", src, c.in, a, err, c.want)
			}
		}
	}
}

func TestArgsIPs(t *testing.T) {
	var a *Args
	if a.IPs() != nil {
		t.Fatal("nil args")
	}
	a = &Args{}
	if a.IPs() != nil {
		t.Fatal("no cni")
	}
}

func FuzzLoadEnv(f *testing.F) {
	for _, s := range []string{"IP=10.0.0.1", "IgnoreUnknown=1;X=y;IP=a,b", "GATEWAY=1.2.3.4;IP=1.2.3.5/24", ";;", "IP=="} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, args string, gw bool) {
		env, err := LoadEnv(args, gw)
		if err != nil {
			if cni.AsTypesError(err).Code != types.ErrInvalidEnvironmentVariables {
				t.Fatalf("code %d", cni.AsTypesError(err).Code)
			}
			return
		}
		if !gw && len(env.Gateways) > 0 {
			t.Fatal("GATEWAY accepted without withGateway")
		}
		for _, ip := range env.IPs {
			if strings.Contains(ip, ",") || strings.TrimSpace(ip) != ip {
				t.Fatalf("item %q", ip)
			}
		}
	})
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"10.0.0.1", "fd00::1/64", "::ffff:1.2.3.4/100", "fe80::1%x", "1.2.3.4/0"} {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, s string, needMask bool) {
		a, err := Parse(SourceArgs, s, needMask)
		if err != nil {
			return
		}
		p := a.Prefix()
		if !p.IsValid() || a.IP.Is4In6() || a.IP.Zone() != "" || (needMask && a.Bits < 0) {
			t.Fatalf("%q → %+v", s, a)
		}
	})
}
