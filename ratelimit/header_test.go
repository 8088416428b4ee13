package ratelimit_test

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/ratelimit"
)

func TestHeaders(t *testing.T) {
	rs := []ratelimit.Result{
		{Policy: "tokens-shopper", Allowed: true, Remaining: 9, Reset: 500 * time.Millisecond, Quota: 10, Window: 5 * time.Second},
		{Policy: "tokens-ip", Allowed: true, Remaining: 199, Reset: 10 * time.Millisecond, Quota: 200, Window: 2 * time.Second},
	}
	if got, want := ratelimit.PolicyHeader(rs), `"tokens-shopper";q=10;w=5, "tokens-ip";q=200;w=2`; got != want {
		t.Errorf("PolicyHeader = %s, want %s", got, want)
	}
	if got, want := ratelimit.RateLimitHeader(rs), `"tokens-shopper";r=9;t=1, "tokens-ip";r=199;t=1`; got != want {
		t.Errorf("RateLimitHeader = %s, want %s", got, want)
	}
	if ratelimit.PolicyHeader(nil) != "" || ratelimit.RateLimitHeader(nil) != "" {
		t.Error("headers for no results are not empty")
	}
	odd := []ratelimit.Result{{Policy: "a\"b\\c\n", Remaining: -1, Window: 10 * time.Millisecond, Reset: 0, Quota: 1 << 62}}
	if got, want := ratelimit.PolicyHeader(odd), `"a\"b\\c?";q=999999999999999;w=1`; got != want {
		t.Errorf("PolicyHeader = %s, want %s", got, want)
	}
	if got, want := ratelimit.RateLimitHeader(odd), `"a\"b\\c?";r=0;t=0`; got != want {
		t.Errorf("RateLimitHeader = %s, want %s", got, want)
	}
}

// TestHeadersParseBack writes the headers of real decisions, with random
// policies and shares, and parses them back to the same figures.
func TestHeadersParseBack(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for i := range 500 {
		var ps []ratelimit.Policy
		for j := range 1 + r.IntN(6) {
			p := pol("p"+strconv.Itoa(j), 1+float64(r.IntN(1000)), r.Float64()*100+0.01)
			p.Shadow = r.IntN(3) == 0
			ps = append(ps, p)
		}
		l, clk := newLimiter(t, 0, ps...)
		l.SetShare(1 + r.IntN(4))
		var d ratelimit.Decision
		for range 1 + r.IntN(50) {
			clk.Advance(time.Duration(r.Int64N(int64(100 * time.Millisecond))))
			d = check(l, "k")
		}
		rs := d.Results()
		ph, rl := ratelimit.PolicyHeader(rs), ratelimit.RateLimitHeader(rs)
		pItems, err := ratelimit.ParseList(ph)
		if err != nil {
			t.Fatalf("case %d: ParseList(%s): %v", i, ph, err)
		}
		rItems, err := ratelimit.ParseList(rl)
		if err != nil {
			t.Fatalf("case %d: ParseList(%s): %v", i, rl, err)
		}
		if len(pItems) != len(rs) || len(rItems) != len(rs) {
			t.Fatalf("case %d: %d results, %d and %d items", i, len(rs), len(pItems), len(rItems))
		}
		for j, res := range rs {
			w := int64((res.Window + time.Second - 1) / time.Second)
			tt := int64((res.Reset + time.Second - 1) / time.Second)
			want := ratelimit.Item{Name: res.Policy, Params: map[string]int64{"q": int64(res.Quota), "w": max(w, 1)}}
			if !reflect.DeepEqual(pItems[j], want) {
				t.Errorf("case %d: policy item %+v, want %+v", i, pItems[j], want)
			}
			want = ratelimit.Item{Name: res.Policy, Params: map[string]int64{"r": int64(res.Remaining), "t": tt}}
			if !reflect.DeepEqual(rItems[j], want) {
				t.Errorf("case %d: ratelimit item %+v, want %+v", i, rItems[j], want)
			}
		}
	}
}

func TestAppendHeadersDoNotAllocate(t *testing.T) {
	rs := []ratelimit.Result{{Policy: "a", Quota: 10, Window: time.Second}, {Policy: "b", Remaining: 3}}
	buf := make([]byte, 0, 256)
	allocs := testing.AllocsPerRun(100, func() {
		buf = ratelimit.AppendPolicyHeader(buf[:0], rs)
		buf = ratelimit.AppendRateLimitHeader(buf[:0], rs)
	})
	if allocs != 0 {
		t.Errorf("%v allocations", allocs)
	}
}

func TestParseList(t *testing.T) {
	item := func(name string, kv ...any) ratelimit.Item {
		it := ratelimit.Item{Name: name}
		for i := 0; i < len(kv); i += 2 {
			if it.Params == nil {
				it.Params = map[string]int64{}
			}
			it.Params[kv[i].(string)] = int64(kv[i+1].(int))
		}
		return it
	}
	tests := []struct {
		in   string
		want []ratelimit.Item
	}{
		{``, nil},
		{`   `, nil},
		{`"a"`, []ratelimit.Item{item("a")}},
		{`"tokens-shopper";q=10;w=5, "tokens-ip";q=200;w=2`,
			[]ratelimit.Item{item("tokens-shopper", "q", 10, "w", 5), item("tokens-ip", "q", 200, "w", 2)}},
		{`  "a";r=1  ,	"b";t=2	 `, []ratelimit.Item{item("a", "r", 1), item("b", "t", 2)}},
		{`"a",` + "\t" + `"b"`, []ratelimit.Item{item("a"), item("b")}},
		{`"a";r=1;r=2`, []ratelimit.Item{item("a", "r", 2)}},
		{`"a"; r=1;  t=2`, []ratelimit.Item{item("a", "r", 1, "t", 2)}},
		{`"a";q=-5`, []ratelimit.Item{item("a", "q", -5)}},
		{`"a";q=007`, []ratelimit.Item{item("a", "q", 7)}},
		{`"a";q=999999999999999`, []ratelimit.Item{item("a", "q", 999999999999999)}},
		{`"a";*x-y.z_9=1`, []ratelimit.Item{item("a", "*x-y.z_9", 1)}},
		{`"a\"b\\c"`, []ratelimit.Item{item(`a"b\c`)}},
		{`"", " ~!"`, []ratelimit.Item{item(""), item(" ~!")}},
		{`"a","a"`, []ratelimit.Item{item("a"), item("a")}},
	}
	for _, tt := range tests {
		got, err := ratelimit.ParseList(tt.in)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseList(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseListRejects(t *testing.T) {
	tests := []struct{ in, problem string }{
		{`a`, "must be a string"},
		{`1`, "must be a string"},
		{`?1`, "must be a string"},
		{`:YWJj:`, "must be a string"},
		{`("a" "b")`, "inner list"},
		{`"a`, "no closing quote"},
		{`"a\`, "backslash"},
		{`"a\n"`, "backslash must escape"},
		{"\"a\tb\"", "outside printable ASCII"},
		{"\"caf\u00e9\"", "outside printable ASCII"},
		{`"a",`, "trailing comma"},
		{`"a", `, "trailing comma"},
		{`,"a"`, "must be a string"},
		{`"a",,"b"`, "must be a string"},
		{`"a" "b"`, "expected ','"},
		{`"a";`, "key missing"},
		{`"a";Q=1`, "must start with a-z"},
		{`"a";1q=1`, "must start with a-z"},
		{`"a";q`, "must have an integer value"},
		{`"a";q=`, "must have an integer value"},
		{`"a";q=-`, "must have an integer value"},
		{`"a";q=x`, "must have an integer value"},
		{`"a";q="1"`, "must have an integer value"},
		{`"a";q=?1`, "must have an integer value"},
		{`"a";q=1.5`, "not a decimal"},
		{`"a";q=1.`, "not a decimal"},
		{`"a";q=1000000000000000`, "more than 15 digits"},
		{`"a" ;q=1`, "expected ','"},
		{`"a";q=1x`, "expected ','"},
		{`"a";q=1;`, "key missing"},
		{"\t\"a\"", "must be a string"},
	}
	for _, tt := range tests {
		got, err := ratelimit.ParseList(tt.in)
		var pe *ratelimit.ParseError
		if err == nil || !errors.As(err, &pe) || !strings.Contains(err.Error(), tt.problem) {
			t.Errorf("ParseList(%q) = %+v, %v; want an error about %q", tt.in, got, err, tt.problem)
		}
	}
}

// format serialises items as an RFC 8941 List, parameters sorted by key.
func format(items []ratelimit.Item) string {
	var b strings.Builder
	for i, it := range items {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('"')
		for _, c := range []byte(it.Name) {
			if c == '"' || c == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(c)
		}
		b.WriteByte('"')
		keys := make([]string, 0, len(it.Params))
		for k := range it.Params {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			b.WriteString(";" + k + "=" + strconv.FormatInt(it.Params[k], 10))
		}
	}
	return b.String()
}

func FuzzParseList(f *testing.F) {
	for _, s := range []string{
		``, `"a"`, `"tokens-shopper";q=10;w=5, "tokens-ip";q=200;w=2`, `"a";r=1;r=2`, `"a\"b\\c";q=-0`,
		`  "a" ,	"b";t=007 `, `"a";q=1.5`, `("a")`, `"a",`, `"a";q=1000000000000000`, `"a";*k=1`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		items, err := ratelimit.ParseList(s)
		if err != nil {
			return
		}
		out := format(items)
		again, err := ratelimit.ParseList(out)
		if err != nil {
			t.Fatalf("ParseList(%q) = %+v; its serialisation %q does not parse: %v", s, items, out, err)
		}
		if !reflect.DeepEqual(items, again) {
			t.Fatalf("ParseList(%q) = %+v; again from %q: %+v", s, items, out, again)
		}
	})
}
