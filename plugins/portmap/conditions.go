package portmap

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"unicode"

	"github.com/google/nftables/expr"

	"github.com/knit-cni/knit/pkg/nftown"
)

// conditionsHelp lists the nft match expressions conditionsV4/V6 accept
// with the nftables backend. The reference pastes the strings into nft's
// command line; knit talks netlink, so it compiles this subset and rejects
// the rest rather than guessing.
const conditionsHelp = `supported: "ip|ip6 saddr|daddr [==|!=] ADDR[/LEN]", "[meta] iifname|oifname [==|!=] NAME[*]", "[meta] mark [==|!=] VALUE"`

// parseConditions compiles the nft match expressions of conditionsV4 (v4)
// or conditionsV6. Entries are joined with spaces first, as the reference
// does, so ["ip", "daddr", "!=", "10.0.0.1"] and ["ip daddr != 10.0.0.1"]
// are the same.
func parseConditions(conds []string, v4 bool) ([]expr.Any, error) {
	toks, err := tokenize(strings.Join(conds, " "))
	if err != nil {
		return nil, err
	}
	var out []expr.Any
	for len(toks) > 0 {
		e, rest, err := parseCondition(toks, v4)
		if err != nil {
			return nil, err
		}
		out, toks = append(out, e...), rest
	}
	return out, nil
}

type token struct {
	s      string
	quoted bool
}

func tokenize(s string) ([]token, error) {
	var out []token
	for {
		s = strings.TrimLeftFunc(s, unicode.IsSpace)
		if s == "" {
			return out, nil
		}
		if s[0] == '"' {
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				return nil, fmt.Errorf("unterminated quote in %q", s)
			}
			out = append(out, token{s: s[1 : end+1], quoted: true})
			s = s[end+2:]
			continue
		}
		end := strings.IndexFunc(s, unicode.IsSpace)
		if end < 0 {
			end = len(s)
		}
		out = append(out, token{s: s[:end]})
		s = s[end:]
	}
}

func parseCondition(toks []token, v4 bool) ([]expr.Any, []token, error) {
	sel := toks[0].s
	if sel == "meta" && len(toks) > 1 {
		toks = toks[1:]
		sel = toks[0].s
		if sel != "iifname" && sel != "oifname" && sel != "mark" {
			return nil, nil, fmt.Errorf("unsupported match %q; %s", "meta "+sel, conditionsHelp)
		}
	}
	switch sel {
	case "ip", "ip6":
		return parseAddrCond(toks, v4)
	case "iifname", "oifname":
		neq, val, rest, err := opAndValue(toks[1:], sel)
		if err != nil {
			return nil, nil, err
		}
		if err := checkIfName(val.s); err != nil {
			return nil, nil, err
		}
		return nftown.IfName(sel == "iifname", val.s, neq), rest, nil
	case "mark":
		neq, val, rest, err := opAndValue(toks[1:], sel)
		if err != nil {
			return nil, nil, err
		}
		n, err := strconv.ParseUint(val.s, 0, 32)
		if err != nil || val.quoted {
			return nil, nil, fmt.Errorf("mark %q is not a 32-bit number", val.s)
		}
		return nftown.Mark(uint32(n), 0xffffffff, neq), rest, nil
	}
	return nil, nil, fmt.Errorf("unsupported match %q; %s", sel, conditionsHelp)
}

func parseAddrCond(toks []token, v4 bool) ([]expr.Any, []token, error) {
	fam := toks[0].s
	if (fam == "ip") != v4 {
		return nil, nil, fmt.Errorf("%q matches the other address family", fam)
	}
	if len(toks) < 2 || (toks[1].s != "saddr" && toks[1].s != "daddr") {
		return nil, nil, fmt.Errorf("%q must be followed by saddr or daddr; %s", fam, conditionsHelp)
	}
	what := fam + " " + toks[1].s
	neq, val, rest, err := opAndValue(toks[2:], what)
	if err != nil {
		return nil, nil, err
	}
	n, err := parsePrefix(val.s, v4)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	return nftown.Addr(toks[1].s == "saddr", n, neq), rest, nil
}

// opAndValue reads an optional comparison operator and a value.
func opAndValue(toks []token, what string) (neq bool, val token, rest []token, err error) {
	if len(toks) > 0 && !toks[0].quoted {
		switch toks[0].s {
		case "==", "eq":
			toks = toks[1:]
		case "!=", "ne":
			neq, toks = true, toks[1:]
		}
	}
	if len(toks) == 0 {
		return false, token{}, nil, fmt.Errorf("%s: missing value", what)
	}
	if !toks[0].quoted && strings.ContainsAny(toks[0].s, "{}<>,") {
		return false, token{}, nil, fmt.Errorf("%s: sets and ranges are not supported (%q)", what, toks[0].s)
	}
	return neq, toks[0], toks[1:], nil
}

func parsePrefix(s string, v4 bool) (*net.IPNet, error) {
	var n *net.IPNet
	if strings.Contains(s, "/") {
		ip, p, err := net.ParseCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not an address or prefix", s)
		}
		p.IP = ip.Mask(p.Mask) // nft rejects host bits; mask them like it masks
		n = p
	} else {
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, fmt.Errorf("%q is not an address or prefix", s)
		}
		bits := 128
		if ip.To4() != nil {
			ip, bits = ip.To4(), 32
		}
		n = &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)}
	}
	if (n.IP.To4() != nil) != v4 {
		return nil, fmt.Errorf("%q is of the other address family", s)
	}
	return n, nil
}

func checkIfName(name string) error {
	base := strings.TrimSuffix(name, "*")
	if base == "" || len(base) >= 16 || strings.ContainsAny(base, "/ *") {
		return fmt.Errorf("%q is not an interface name", name)
	}
	return nil
}
