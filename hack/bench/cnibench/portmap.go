package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/plugins/portmap/portmaptest"
)

// execRunner runs a plugin binary in this (the bench's) namespace.
func execRunner(bin string) portmaptest.Runner {
	return func(ctx context.Context, req *cni.Request) error {
		_, err := timedReq(ctx, bin, req)
		return err
	}
}

func timedReq(ctx context.Context, bin string, req *cni.Request) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = []string{"CNI_COMMAND=" + string(req.Command), "CNI_CONTAINERID=" + req.ContainerID,
		"CNI_NETNS=" + req.Netns, "CNI_IFNAME=" + req.IfName, "CNI_PATH=/nonexistent", "PATH=" + os.Getenv("PATH")}
	cmd.Stdin = bytes.NewReader(req.Config)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("%s %s %s: %v: %s", bin, req.Command, req.ContainerID, err, out)
	}
	return d, nil
}

// runPortmap measures exec'd ADD and DEL of one more container's mapping
// with `mapped` containers already mapped, knit against the reference, each
// in its own network (they share the namespace but not tables: knit's
// nftables table, the reference's iptables chains).
func runPortmap(ctx context.Context, impls []impl, iters int, levels []int) error {
	have := map[string]int{}
	for _, mapped := range levels {
		for _, im := range impls {
			run := execRunner(filepath.Join(im.dir, "portmap"))
			if err := portmaptest.Populate(ctx, run, have[im.name], mapped, "1.0.0", "pm-"+im.name, nil); err != nil {
				return err
			}
			have[im.name] = mapped
		}
		res := map[string]*samples{}
		for _, im := range impls {
			res[im.name] = &samples{}
		}
		next := portmaptest.Max - 1 // measured containers come from the top of the range
		for i := 0; i < iters+2; i++ {
			for j := range impls {
				im := impls[(i+j)%len(impls)]
				add, del, err := portmapOnce(ctx, im, next-i)
				if err != nil {
					return err
				}
				if i >= 2 {
					res[im.name].add = append(res[im.name].add, add)
					res[im.name].del = append(res[im.name].del, del)
				}
			}
		}
		report(fmt.Sprintf("portmap/%d mapped", mapped), impls, res)
	}
	return nil
}

func portmapOnce(ctx context.Context, im impl, i int) (add, del time.Duration, err error) {
	req, err := portmaptest.Request(i, "1.0.0", "pm-"+im.name, nil)
	if err != nil {
		return 0, 0, err
	}
	bin := filepath.Join(im.dir, "portmap")
	if add, err = timedReq(ctx, bin, req); err != nil {
		return 0, 0, err
	}
	req.Command = cni.CmdDel
	del, err = timedReq(ctx, bin, req)
	return add, del, err
}
