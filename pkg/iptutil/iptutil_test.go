package iptutil

import "testing"

func TestParseRule(t *testing.T) {
	r := `-A KNIT-FORWARD -d 10.0.0.2/32 -m comment --comment "net1/c1/eth0" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`
	if c := CommentOf(r); c != "net1/c1/eth0" {
		t.Fatalf("CommentOf = %q", c)
	}
	if j := TargetOf(r); j != "ACCEPT" {
		t.Fatalf("TargetOf = %q", j)
	}
	if CommentOf("-A X -j RETURN") != "" || TargetOf("-N X") != "" {
		t.Fatal("rule without comment or target")
	}
}

func FuzzParseRule(f *testing.F) {
	f.Add(`-A X -m comment --comment "a b" -j Y`)
	f.Add(`--comment "`)
	f.Fuzz(func(t *testing.T, r string) {
		_ = CommentOf(r)
		_ = TargetOf(r)
	})
}
