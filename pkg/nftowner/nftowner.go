// Package nftowner tags nftables rules with the CNI attachment that owns
// them, so that DEL removes exactly one attachment's rules (without knowing
// its addresses, e.g. when the namespace is already gone) and GC removes the
// rules of attachments that are no longer valid.
//
// A rule's comment (nft's userdata, what `nft list ruleset` shows) starts
// with a fixed-width tag "knit:<network hash>:<attachment hash>" followed by
// a human-readable description that may be truncated.
//
// Rules are the unit here: each attachment adds its own rules (bridge/ptp
// masquerade, bridge spoof-check) and DEL/GC delete them by tag. For
// per-attachment state that must not grow the rule set (portmap and
// firewall keep it in set and map elements so that ADD costs the same
// with thousands of containers), see package nftown, which records owners
// of elements instead.
package nftowner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/cni"
)

// MaxComment is the longest comment nft(8) accepts; longer ones are cut.
const MaxComment = 128

// Owner is the attachment a rule belongs to.
type Owner struct {
	Network     string
	ContainerID string
	IfName      string
}

// NetworkTag is the comment prefix shared by every rule of a network.
func NetworkTag(network string) string {
	h := sha256.Sum256([]byte(network))
	return "knit:" + hex.EncodeToString(h[:4]) + ":"
}

// Tag is the comment prefix unique to the attachment.
func (o Owner) Tag() string {
	h := sha256.Sum256([]byte(o.Network + "\x00" + o.ContainerID + "\x00" + o.IfName))
	return NetworkTag(o.Network) + hex.EncodeToString(h[:8])
}

// Comment is the full rule comment: the tag, then who the rule is for.
func (o Owner) Comment() string {
	c := fmt.Sprintf("%s net=%s id=%s if=%s", o.Tag(), o.Network, o.ContainerID, o.IfName)
	if len(c) > MaxComment {
		c = c[:MaxComment]
	}
	return c
}

// UserData encodes the comment as nft rule userdata.
func (o Owner) UserData() []byte {
	return userdata.AppendString(nil, userdata.TypeComment, o.Comment())
}

// CommentOf returns a rule's comment, "" if it has none.
func CommentOf(r *nftables.Rule) string {
	c, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return c
}

// Comments returns the comments of the rules of one chain in the
// namespace behind fd (0: the caller's): the owner tags a DEL or GC acts
// on. A missing table or chain has none.
func Comments(fd int, tbl *nftables.Table, chain string) ([]string, error) {
	c, err := Open(fd)
	if err != nil {
		return nil, err
	}
	defer c.CloseLasting()
	rules, err := c.GetRules(tbl, &nftables.Chain{Name: chain, Table: tbl})
	if NotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s/%s: %w", tbl.Name, chain, err)
	}
	out := make([]string, 0, len(rules))
	for _, r := range rules {
		out = append(out, CommentOf(r))
	}
	return out, nil
}

// CountContainer returns how many of comments (see Comments) belong to
// containerID, whatever the network and interface.
func CountContainer(comments []string, containerID string) int {
	n := 0
	for _, c := range comments {
		if strings.Contains(c, " id="+containerID+" ") {
			n++
		}
	}
	return n
}

// Open returns a connection to nftables in the namespace behind fd, or the
// calling thread's namespace when fd is 0. The connection keeps one socket
// for all its operations; close it with CloseLasting, preferably after
// slow work of the caller's own (see Install).
func Open(fd int) (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.AsLasting()}
	if fd > 0 {
		opts = append(opts, nftables.WithNetNSFd(fd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables connection: %w", err)
	}
	return c, nil
}

// Install adds rules (owned rules of one chain) cheaply and creates the
// chain's table when it is missing:
//
//  1. the rules alone, the common case: a transaction that only adds
//     rules leaves the kernel nothing to free, while one that updates an
//     existing table or chain (or deletes anything) makes the kernel free
//     objects after an RCU grace period, and closing any nftables socket
//     (process exit included) waits for that (~10 ms);
//  2. when the chain is missing: create(c) queues the table (created
//     exclusively), its chains and fixed rules, then the rules;
//  3. when that finds the table already there (another ADD created it
//     meanwhile, or the table lost a chain): repair(c) queues idempotent
//     adds that also reset the fixed rules, then the rules.
func Install(ctx context.Context, c *nftables.Conn, rules []*nftables.Rule, create, repair func(*nftables.Conn)) error {
	steps := []func(*nftables.Conn){nil, create, repair}
	var err error
	for i, step := range steps {
		if err = ctx.Err(); err != nil {
			return err
		}
		if step != nil {
			step(c)
		}
		for _, r := range rules {
			c.AddRule(r)
		}
		err = c.Flush()
		switch {
		case err == nil:
			return nil
		case i == 0 && !NotFound(err), i == 1 && !Exists(err):
			return err
		}
	}
	return err
}

// Exists reports whether err says an object already exists.
func Exists(err error) bool {
	return err != nil && (errors.Is(err, unix.EEXIST) || strings.Contains(err.Error(), unix.EEXIST.Error()))
}

// NotFound reports whether err says a table, chain or rule does not exist.
// google/nftables flattens some netlink errors into strings ("%v"), so the
// errno cannot always be matched with errors.Is.
func NotFound(err error) bool {
	return err != nil && (errors.Is(err, unix.ENOENT) || strings.Contains(err.Error(), unix.ENOENT.Error()))
}

// DeleteMatching deletes the rules of one chain whose comment satisfies
// match. A missing table or chain means there is nothing to delete. A rule
// removed concurrently by someone else fails the whole batch with ENOENT;
// the listing is then retried once.
func DeleteMatching(ctx context.Context, c *nftables.Conn, chain *nftables.Chain, match func(comment string) bool) error {
	var err error
	for range 2 {
		if err = ctx.Err(); err != nil {
			return err
		}
		err = deleteOnce(c, chain, match)
		if !NotFound(err) {
			return err
		}
	}
	if NotFound(err) {
		return nil
	}
	return err
}

func deleteOnce(c *nftables.Conn, chain *nftables.Chain, match func(string) bool) error {
	rules, err := c.GetRules(chain.Table, chain)
	if err != nil {
		return err // NotFound: no table or chain, nothing to delete
	}
	n := 0
	for _, r := range rules {
		if match(CommentOf(r)) {
			if err := c.DelRule(r); err != nil {
				return err
			}
			n++
		}
	}
	if n == 0 {
		return nil
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("deleting %d rules from %s: %w", n, chain.Name, err)
	}
	return nil
}

// DeleteOwned deletes o's rules from chain.
func DeleteOwned(ctx context.Context, c *nftables.Conn, chain *nftables.Chain, o Owner) error {
	tag := o.Tag()
	return DeleteMatching(ctx, c, chain, func(comment string) bool { return strings.HasPrefix(comment, tag) })
}

// DeleteStale deletes the rules of network from chain whose attachment is
// not in valid (CNI GC).
func DeleteStale(ctx context.Context, c *nftables.Conn, chain *nftables.Chain, network string, valid []cni.Attachment) error {
	keep := make(map[string]bool, len(valid))
	for _, a := range valid {
		keep[Owner{Network: network, ContainerID: a.ContainerID, IfName: a.IfName}.Tag()] = true
	}
	prefix := NetworkTag(network)
	width := len(Owner{Network: network}.Tag())
	return DeleteMatching(ctx, c, chain, func(comment string) bool {
		if !strings.HasPrefix(comment, prefix) || len(comment) < width {
			return false
		}
		return !keep[comment[:width]]
	})
}
