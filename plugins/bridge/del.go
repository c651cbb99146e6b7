package bridge

import (
	"context"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/masq"
	"github.com/knit-cni/knit/pkg/spoofchk"
	"github.com/knit-cni/knit/pkg/vethnet"
)

// decode reads a config for DEL and GC: only what teardown needs, so that a
// value ADD would reject (a bad MAC in CNI_ARGS, say) can never make an
// attachment impossible to remove.
func decode(data []byte) (*Config, error) {
	c := &Config{Bridge: defaultBridge, PreserveDefaultVlan: true}
	if err := cni.ParseConfig(data, c); err != nil {
		return nil, err
	}
	var err error
	c.ipamType, err = c.IPAMType()
	return c, err
}

// Del removes the container's veth (the host end goes with it), the
// attachment's firewall rules and its IPAM allocation; the bridge stays.
// Everything already gone, including the namespace, is success.
func (Plugin) Del(ctx context.Context, req *cni.Request) error {
	conf, err := decode(req.Config)
	if err != nil {
		return err
	}
	var rules []vethnet.RuleFunc
	if conf.MacSpoofChk {
		rules = append(rules, spoofchk.Teardown)
	}
	if conf.IPMasq {
		rules = append(rules, masq.Teardown)
	}
	return vethnet.Del(ctx, req, conf.Name, conf.ipamType, rules...)
}

// GC removes masquerade and spoof-check rules of this network's
// attachments that are not in valid, and passes GC on to the IPAM plugin.
func (Plugin) GC(ctx context.Context, req *cni.Request, valid []cni.Attachment) error {
	conf, err := decode(req.Config)
	if err != nil {
		return err
	}
	return vethnet.GC(ctx, req, conf.Name, conf.ipamType, valid, masq.GC, spoofchk.GC)
}
