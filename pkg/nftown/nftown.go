// Package nftown keeps per-attachment ("owner") nftables state in a shared
// table so that adding or removing one owner costs the same whatever the
// number of other owners — in user space and in the kernel.
//
// The packet path is a few static rules that look packets up in named sets
// and data maps: O(1) per packet. An owner contributes elements (a host
// port's DNAT target, a container address). Verdict maps and jump rules are
// avoided on purpose: the kernel revalidates the whole graph reachable from
// a table's base chains on every commit that adds a rule or verdict
// element, which made each ADD cost ~1.4 µs per other mapped container.
//
// Ownership is recorded in chains no base chain reaches, holding empty rules
// whose comments are the records, so the kernel never walks them:
//
//	o-<hash(owner)>   one record per element the owner claimed
//	k-<set>-<key>     the claims on one element, oldest first
//
// An element holds the data of its newest claim. Two owners may claim one
// key (a stale attachment and a new one reusing its address or host port):
// both claims are kept, and releasing one leaves the other's element in
// place, restoring its data when the newest claim goes.
//
// Callers hold a lock (hostns.Host.Lock) around Claim/Release and the
// transaction they queue into: both read claims before deciding what to
// write.
//
// Not to be confused with package nftowner, which tags whole rules with
// their attachment (bridge/ptp masquerade, bridge spoof-check): one rule
// per attachment in a chain a packet walks, fine where there are a few
// rules per attachment and no lookup is needed. nftown is for state that
// must stay O(1) per packet and per ADD however many attachments a host
// has (portmap, firewall), hence elements in sets and maps, not rules.
package nftown

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"

	"github.com/knit-cni/knit/pkg/nftowner"
)

// Chain name prefixes.
const (
	OwnerChainPrefix = "o-"
	ClaimChainPrefix = "k-"
)

// maxOwner keeps record comments (set, key, data and owner) under the
// kernel's 256-byte userdata limit, and iptables' comment limit.
const maxOwner = 120

// Owner names an attachment: network name, container ID and interface, the
// triple GC's valid-attachment list and the network config identify. Very
// long values, and values with characters that rule comments or iptables
// output would quote or split, are hashed, keeping the network's prefix
// recognisable.
func Owner(network, containerID, ifName string) string {
	s := network + "/" + containerID + "/" + ifName
	if len(s) <= maxOwner && plain(containerID) && plain(ifName) && plain(network) {
		return s
	}
	return NetworkPrefix(network) + "#" + hash(s)[:40]
}

// NetworkPrefix is how every owner string of network begins, so that GC of
// one network never touches another network's owners.
func NetworkPrefix(network string) string {
	if len(network) > maxOwner/2 || !plain(network) {
		return "#" + hash(network)[:16] + "/"
	}
	return network + "/"
}

// plain reports whether s holds only the characters the CNI spec allows in
// names and container IDs.
func plain(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func hash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// OwnerChain is the name of owner's record chain.
func OwnerChain(owner string) string { return OwnerChainPrefix + hash(owner)[:32] }

// Elem is one element of a named set or map.
type Elem struct {
	Set  string
	Key  []byte
	Data []byte // the map value; nil for a set
}

func claimChain(e Elem) string { return ClaimChainPrefix + e.Set + "-" + hex.EncodeToString(e.Key) }

func hexOrDash(b []byte) string {
	if len(b) == 0 {
		return "-"
	}
	return hex.EncodeToString(b)
}

func unhex(s string) ([]byte, error) {
	if s == "-" {
		return nil, nil
	}
	return hex.DecodeString(s)
}

// recordComment is an owner record: "<set> <key> <data> <owner>".
func recordComment(e Elem, owner string) string {
	return e.Set + " " + hex.EncodeToString(e.Key) + " " + hexOrDash(e.Data) + " " + owner
}

func parseRecord(c string) (Elem, string, error) {
	f := strings.SplitN(c, " ", 4)
	if len(f) != 4 {
		return Elem{}, "", fmt.Errorf("malformed owner record %q", c)
	}
	key, err := hex.DecodeString(f[1])
	if err != nil {
		return Elem{}, "", fmt.Errorf("owner record %q: %w", c, err)
	}
	data, err := unhex(f[2])
	if err != nil {
		return Elem{}, "", fmt.Errorf("owner record %q: %w", c, err)
	}
	return Elem{Set: f[0], Key: key, Data: data}, f[3], nil
}

// claim is one owner's claim on an element: "<data> <owner>".
type claim struct {
	handle uint64
	data   []byte
	owner  string
}

func claimComment(data []byte, owner string) string { return hexOrDash(data) + " " + owner }

func parseClaims(rules []*nftables.Rule) ([]claim, error) {
	out := make([]claim, 0, len(rules))
	for _, r := range rules {
		c := CommentOf(r)
		f := strings.SplitN(c, " ", 2)
		if len(f) != 2 {
			return nil, fmt.Errorf("malformed claim %q", c)
		}
		data, err := unhex(f[0])
		if err != nil {
			return nil, fmt.Errorf("claim %q: %w", c, err)
		}
		out = append(out, claim{handle: r.Handle, data: data, owner: f[1]})
	}
	return out, nil
}

// Comment encodes s as a rule comment, as nft shows it.
func Comment(s string) []byte {
	return userdata.AppendString(nil, userdata.TypeComment, s)
}

// CommentOf returns a rule's comment ("" if it has none).
func CommentOf(r *nftables.Rule) string { return nftowner.CommentOf(r) }

// Table is a table whose set and map elements belong to owners.
// Operations queue messages on Conn; the caller flushes them as one
// transaction.
type Table struct {
	Conn *nftables.Conn
	T    *nftables.Table
	// Careful makes Claim and Release read the sets they change first and
	// only delete elements that are there and add ones that are not. It
	// costs a dump of each set; callers retry with it when a transaction
	// failed because the sets no longer matched the claims (an admin
	// flushed a set).
	Careful bool
	present map[string]map[string][]byte
}

// Rules returns the rules of chain. The kernel answers a dump of a missing
// table or chain with nothing; record and claim chains are never empty
// while they exist, Exists tells for the rest.
func (t *Table) Rules(chain string) ([]*nftables.Rule, error) {
	rules, err := t.Conn.GetRules(t.T, &nftables.Chain{Name: chain, Table: t.T})
	if IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing chain %s: %w", chain, err)
	}
	return rules, nil
}

// Exists reports whether chain exists.
func (t *Table) Exists(chain string) (bool, error) {
	_, err := t.Conn.ListChain(t.T, chain)
	if IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("looking up chain %s: %w", chain, err)
	}
	return true, nil
}

// Claim queues owner's claims on elems: records, claims and the elements
// themselves. An element another owner claimed gets owner's data. The owner
// must have no claims (Release it first).
func (t *Table) Claim(owner string, elems []Elem) error {
	oc := t.Conn.AddChain(&nftables.Chain{Name: OwnerChain(owner), Table: t.T})
	seen := map[string]bool{}
	for _, e := range elems {
		cname := claimChain(e)
		if seen[cname] {
			continue // the first of duplicate keys wins, as in the packet path
		}
		seen[cname] = true
		claims, err := t.claims(cname)
		if err != nil {
			return err
		}
		t.Conn.AddRule(&nftables.Rule{Table: t.T, Chain: oc, UserData: Comment(recordComment(e, owner))})
		cc := t.Conn.AddChain(&nftables.Chain{Name: cname, Table: t.T})
		t.Conn.AddRule(&nftables.Rule{Table: t.T, Chain: cc, UserData: Comment(claimComment(e.Data, owner))})
		var cur []byte
		held := len(claims) > 0
		if held {
			cur = claims[len(claims)-1].data
		}
		if err := t.setElem(e, held, cur, e.Data); err != nil {
			return err
		}
	}
	return nil
}

func (t *Table) claims(chain string) ([]claim, error) {
	rules, err := t.Rules(chain)
	if err != nil {
		return nil, err
	}
	return parseClaims(rules)
}

// setElem queues the change of element e from (held, cur) to data; a nil
// want with remove deletes it.
func (t *Table) setElem(e Elem, held bool, cur, want []byte) error {
	return t.change(e, held, cur, want, false)
}

func (t *Table) change(e Elem, held bool, cur, want []byte, remove bool) error {
	if t.Careful {
		var err error
		if held, cur, err = t.lookup(e); err != nil {
			return err
		}
	}
	set := &nftables.Set{Table: t.T, Name: e.Set}
	if held && (remove || !bytes.Equal(cur, want)) {
		if err := t.Conn.SetDeleteElements(set, []nftables.SetElement{{Key: e.Key}}); err != nil {
			return fmt.Errorf("%s element: %w", e.Set, err)
		}
		held = false
	}
	if !held && !remove {
		if err := t.Conn.SetAddElements(set, []nftables.SetElement{{Key: e.Key, Val: want}}); err != nil {
			return fmt.Errorf("%s element: %w", e.Set, err)
		}
	}
	return nil
}

// lookup reads whether e's key is in its set, and its data (Careful mode).
func (t *Table) lookup(e Elem) (bool, []byte, error) {
	if t.present == nil {
		t.present = map[string]map[string][]byte{}
	}
	m, ok := t.present[e.Set]
	if !ok {
		els, err := t.Conn.GetSetElements(&nftables.Set{Table: t.T, Name: e.Set})
		if err != nil && !IsNotExist(err) {
			return false, nil, fmt.Errorf("reading %s: %w", e.Set, err)
		}
		m = map[string][]byte{}
		for _, el := range els {
			m[string(el.Key)] = el.Val
		}
		t.present[e.Set] = m
	}
	d, ok := m[string(e.Key)]
	return ok, d, nil
}

// Release queues the removal of owner's claims: its claim on every element
// it recorded, the element when no claim is left (or the newest remaining
// claim's data when owner's was the newest), and its record chain. It
// reports whether the owner had anything.
func (t *Table) Release(owner string) (bool, error) {
	ocName := OwnerChain(owner)
	rules, err := t.Rules(ocName)
	if err != nil || len(rules) == 0 {
		return false, err
	}
	for _, r := range rules {
		e, _, err := parseRecord(CommentOf(r))
		if err != nil {
			return false, err
		}
		if err := t.unclaim(e, owner); err != nil {
			return false, err
		}
	}
	t.Conn.DelChain(&nftables.Chain{Name: ocName, Table: t.T})
	return true, nil
}

func (t *Table) unclaim(e Elem, owner string) error {
	cname := claimChain(e)
	claims, err := t.claims(cname)
	if err != nil || len(claims) == 0 {
		return err // no claims: not ours to touch
	}
	cc := &nftables.Chain{Name: cname, Table: t.T}
	var left []claim
	for _, c := range claims {
		if c.owner != owner {
			left = append(left, c)
			continue
		}
		if err := t.Conn.DelRule(&nftables.Rule{Table: t.T, Chain: cc, Handle: c.handle}); err != nil {
			return err
		}
	}
	cur := claims[len(claims)-1].data
	if len(left) == 0 {
		t.Conn.DelChain(cc)
		return t.change(e, true, cur, nil, true)
	}
	return t.change(e, true, cur, left[len(left)-1].data, false)
}

// JumpTarget returns the chain a rule ends by jumping to, "" if it does not.
func JumpTarget(r *nftables.Rule) string {
	if len(r.Exprs) == 0 {
		return ""
	}
	if v, ok := r.Exprs[len(r.Exprs)-1].(*expr.Verdict); ok && v.Kind == expr.VerdictJump {
		return v.Chain
	}
	return ""
}

// Owners lists the owners with records in the table, by record chain.
func (t *Table) Owners() (map[string]string, error) {
	chains, err := t.Conn.ListChainsOfTableFamily(t.T.Family)
	if err != nil {
		return nil, fmt.Errorf("listing chains: %w", err)
	}
	out := map[string]string{}
	for _, c := range chains {
		if c.Table.Name != t.T.Name || !strings.HasPrefix(c.Name, OwnerChainPrefix) {
			continue
		}
		rules, err := t.Rules(c.Name)
		if err != nil {
			return nil, err
		}
		owner := ""
		if len(rules) > 0 {
			_, owner, _ = parseRecord(CommentOf(rules[0]))
		}
		out[c.Name] = owner
	}
	return out, nil
}

// Verify checks that owner recorded exactly elems and still claims each.
func (t *Table) Verify(owner string, elems []Elem) error {
	got, err := t.Rules(OwnerChain(owner))
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, e := range elems {
		want[recordComment(e, owner)] = true
	}
	have := map[string]bool{}
	for _, r := range got {
		have[CommentOf(r)] = true
	}
	for c := range want {
		if !have[c] {
			return fmt.Errorf("%s: no record %q", owner, c)
		}
	}
	for _, e := range elems {
		claims, err := t.claims(claimChain(e))
		if err != nil {
			return err
		}
		if !hasClaim(claims, owner) {
			return fmt.Errorf("%s: no claim on %s element %x", owner, e.Set, e.Key)
		}
	}
	if len(have) != len(want) {
		return fmt.Errorf("%s: %d records, want %d", owner, len(have), len(want))
	}
	return nil
}

func hasClaim(claims []claim, owner string) bool {
	for _, c := range claims {
		if c.owner == owner {
			return true
		}
	}
	return false
}

// IsNotExist reports a missing table, chain, set or element. The nftables
// library formats netlink errors with %v, so the errno is matched by text
// as well as by value.
func IsNotExist(err error) bool { return nftowner.NotFound(err) }

// IsMismatch reports a transaction that failed because a set no longer
// matched the claims: an element to delete was gone, or one to add was
// there with other data. Callers retry with Careful.
func IsMismatch(err error) bool {
	return IsNotExist(err) || nftowner.Exists(err)
}

// SortedKeys returns m's keys in order, for deterministic rule generation.
func SortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
