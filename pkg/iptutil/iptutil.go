// Package iptutil holds the iptables helpers of the plugins' "iptables"
// backends (github.com/coreos/go-iptables, which execs iptables/ip6tables:
// run it inside hostns.Host.Do so the binaries act in the right namespace).
package iptutil

import (
	"errors"
	"fmt"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// New returns an iptables (v4) or ip6tables (v6) handle that waits for the
// xtables lock up to 10 s.
func New(v6 bool) (*iptables.IPTables, error) {
	proto := iptables.ProtocolIPv4
	if v6 {
		proto = iptables.ProtocolIPv6
	}
	ipt, err := iptables.New(iptables.IPFamily(proto), iptables.Timeout(10))
	if err != nil {
		return nil, fmt.Errorf("iptables: %w", err)
	}
	return ipt, nil
}

// Usable returns a handle when the family's iptables works here (binary
// present, kernel support), nil otherwise: DEL must not fail on a host
// without ip6tables.
func Usable(v6 bool, table string) *iptables.IPTables {
	ipt, err := New(v6)
	if err != nil {
		return nil
	}
	if ok, err := ipt.ChainExists(table, "OUTPUT"); err != nil || !ok {
		return nil
	}
	return ipt
}

// EnsureChain creates chain unless it exists; it never flushes it.
func EnsureChain(ipt *iptables.IPTables, table, chain string) error {
	ok, err := ipt.ChainExists(table, chain)
	if err != nil || ok {
		return err
	}
	if err := ipt.NewChain(table, chain); err != nil {
		// A concurrent process may have created it meanwhile.
		if ok, _ := ipt.ChainExists(table, chain); ok {
			return nil
		}
		return err
	}
	return nil
}

// EnsureFirst inserts rule at the top of chain unless it is already there
// (anywhere in the chain).
func EnsureFirst(ipt *iptables.IPTables, table, chain string, rule ...string) error {
	ok, err := ipt.Exists(table, chain, rule...)
	if err != nil || ok {
		return err
	}
	return ipt.Insert(table, chain, 1, rule...)
}

// Comment is the iptables comment match.
func Comment(s string) []string { return []string{"-m", "comment", "--comment", s} }

// CommentOf returns the comment of a rule as iptables -S prints it.
func CommentOf(rule string) string {
	const k = `--comment "`
	i := strings.Index(rule, k)
	if i < 0 {
		return ""
	}
	rest := rule[i+len(k):]
	j := strings.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return rest[:j]
}

// TargetOf returns the -j target of a rule as iptables -S prints it.
func TargetOf(rule string) string {
	f := strings.Fields(rule)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "-j" {
			return f[i+1]
		}
	}
	return ""
}

// DeleteMatching deletes the rules of chain for which match is true,
// addressing them by position from the last (positions of earlier rules do
// not move). Callers hold their plugin's lock so that no other knit process
// changes the chain meanwhile. A missing chain deletes nothing.
func DeleteMatching(ipt *iptables.IPTables, table, chain string, match func(rule string) bool) (int, error) {
	ok, err := ipt.ChainExists(table, chain)
	if err != nil || !ok {
		return 0, err
	}
	rules, err := ipt.List(table, chain)
	if err != nil {
		return 0, err
	}
	n := 0
	// rules[0] is "-N chain" (or "-P chain policy"): rule i is rules[i].
	for i := len(rules) - 1; i >= 1; i-- {
		if !match(rules[i]) {
			continue
		}
		if err := ipt.DeleteById(table, chain, i); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// DeleteChain flushes and deletes chain; a missing chain is success.
func DeleteChain(ipt *iptables.IPTables, table, chain string) error {
	err := ipt.ClearAndDeleteChain(table, chain)
	var e *iptables.Error
	if errors.As(err, &e) && e.IsNotExist() {
		return nil
	}
	return err
}
