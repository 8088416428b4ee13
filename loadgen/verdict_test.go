package loadgen

import (
	"fmt"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	good := Figures{Stock: 100, Quota: 120, Sold: 100, TokensIssued: 130, TokensExpired: 10, TokensOutstanding: 20}
	fine := seen{tokens: []seenToken{{0, "a"}, {1, "b"}, {0, "a"}}, orders: 100, names: []string{"alice", "bob"}}
	if p := check(good, fine); len(p) != 0 {
		t.Fatalf("a correct run: %v", p)
	}
	for _, tc := range []struct {
		name string
		f    Figures
		s    seen
		want string
	}{
		{"oversold", Figures{Stock: 100, Quota: 120, Sold: 101, TokensIssued: 101}, seen{}, "oversold: sold 101 > stock 100"},
		{"quota", Figures{Stock: 100, Quota: 120, TokensIssued: 131, TokensExpired: 10}, seen{}, "quota exceeded: tokens issued - expired = 121 > quota 120"},
		{"two tokens", good, seen{tokens: []seenToken{{0, "a"}, {0, "b"}}, names: []string{"alice"}}, "shopper alice got two tokens, a and b"},
		{"shared token", good, seen{tokens: []seenToken{{0, "a"}, {1, "a"}}, names: []string{"alice", "bob"}}, "token a went to two shoppers, alice and bob"},
		{"lost token", Figures{Stock: 100, Quota: 120, TokensIssued: 1}, seen{tokens: []seenToken{{0, "a"}, {1, "b"}}}, "lost tokens: the generator was handed 2 distinct tokens, the server counts 1 issued"},
		{"lost order", Figures{Stock: 100, Quota: 120, Sold: 5, TokensIssued: 6}, seen{orders: 6}, "lost orders: 6 purchases were acknowledged with an order, the server counts 5 sold"},
	} {
		p := check(tc.f, tc.s)
		if len(p) != 1 || p[0] != tc.want {
			t.Errorf("%s: %q, want [%q]", tc.name, p, tc.want)
		}
	}
}

// TestCheckBounded: many broken shoppers are listed a few at a time.
func TestCheckBounded(t *testing.T) {
	var s seen
	for i := range 50 {
		s.tokens = append(s.tokens, seenToken{int32(i), "x"}, seenToken{int32(i), fmt.Sprint("y", i)})
	}
	p := check(Figures{Stock: 1, Quota: 1000, TokensIssued: 1000}, s)
	if len(p) != 2*(maxProblemsEach+1) || !strings.Contains(p[maxProblemsEach], "more like these") {
		t.Errorf("%d problems: %q", len(p), p)
	}
}
