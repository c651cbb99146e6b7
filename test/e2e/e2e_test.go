//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestE2E runs every case in parallel (each in its own namespace, pinned to
// known nodes), then checks that nothing the cases created is left on any
// node. Cases use the first two nodes; the knitd restart uses the last one,
// so with 3+ nodes it cannot disturb the others and runs alongside them.
func TestE2E(t *testing.T) {
	start := time.Now()
	c := connect(t)
	t.Logf("nodes %v; knit: %s/%s", c.Nodes, c.knitd().Namespace, c.knitd().Name)
	a, b := c.Nodes[0], c.Nodes[1]
	// Seed 002's policy makes br1 (port ens35, DHCP) on the two labelled
	// nodes; the bridge cases below attach pods to it.
	t.Run("nmstate-seed002-policy", func(t *testing.T) { c.testSeed002Policy(t, a, b) })
	last := c.Nodes[len(c.Nodes)-1]

	t.Run("cases", func(t *testing.T) {
		t.Run("knitd-restart", func(t *testing.T) {
			if len(c.Nodes) >= 3 {
				t.Parallel()
			}
			c.testKnitdRestart(t, last)
		})
		t.Run("seed000-macvlan-conf", func(t *testing.T) { t.Parallel(); c.testSeed000(t, a) })
		t.Run("seed000-same-nad-twice", func(t *testing.T) { t.Parallel(); c.testSeed000Twice(t, b) })
		t.Run("seed001-traffic-split", func(t *testing.T) { c.testSeed001(t, a, b) })
		t.Run("seed002-bridge-across-nodes", func(t *testing.T) { t.Parallel(); c.testSeed002(t, a, b) })
		t.Run("pod-deletion-releases-everything", func(t *testing.T) { t.Parallel(); c.testPodDeletion(t, a) })
	})
	t.Run("nmstate-cut-off-rolled-back", func(t *testing.T) { c.testPolicyRollback(t, b) })
	t.Run("no-leaks", func(t *testing.T) { c.testNoLeaks(t) })
	t.Logf("e2e cases took %v", time.Since(start).Round(time.Millisecond))
}

// testNoLeaks: after every case's namespace is gone, each node's CNI state
// belongs to running sandboxes only, and the bridges have exactly the ports
// the running pods account for.
func (c *Cluster) testNoLeaks(t *testing.T) {
	c.DumpOnFailure(t, c.Nodes...)
	ctx := context.Background()
	for _, n := range c.Nodes {
		err := poll(ctx, releaseWait, func(ctx context.Context) error {
			leaks, err := c.Leaks(ctx, n)
			if err != nil {
				return err
			}
			if len(leaks) > 0 {
				return fmt.Errorf("leaked on %s:\n%s", n, strings.Join(leaks, "\n"))
			}
			return c.portsAccountedFor(ctx, n)
		})
		if err != nil {
			t.Error(err)
		}
	}
}
