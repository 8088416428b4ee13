package ratelimit_test

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/ratelimit"
)

func TestPolicyValidate(t *testing.T) {
	ok := ratelimit.Policy{Name: "tokens-ip_2", Group: ratelimit.GroupTokens, Key: ratelimit.KeyIP, Capacity: 200, Rate: 100}
	tests := []struct {
		name   string
		change func(*ratelimit.Policy)
		field  string // "" for valid
	}{
		{"valid", func(p *ratelimit.Policy) {}, ""},
		{"smallest figures", func(p *ratelimit.Policy) { p.Capacity, p.Rate, p.Cost = 1, 1e-9, 1 }, ""},
		{"largest figures", func(p *ratelimit.Policy) { p.Capacity, p.Rate = 1e9, 1e9 }, ""},
		{"name 64", func(p *ratelimit.Policy) { p.Name = strings.Repeat("a", 64) }, ""},
		{"costs", func(p *ratelimit.Policy) { p.Costs = map[string]float64{"POST /x": 200, "GET /y": 0.5} }, ""},
		{"shadow and off", func(p *ratelimit.Policy) { p.Shadow, p.Off = true, true }, ""},
		{"no name", func(p *ratelimit.Policy) { p.Name = "" }, "name"},
		{"name 65", func(p *ratelimit.Policy) { p.Name = strings.Repeat("a", 65) }, "name"},
		{"name upper case", func(p *ratelimit.Policy) { p.Name = "Tokens" }, "name"},
		{"name space", func(p *ratelimit.Policy) { p.Name = "a b" }, "name"},
		{"name quote", func(p *ratelimit.Policy) { p.Name = `a"b` }, "name"},
		{"name non-ASCII", func(p *ratelimit.Policy) { p.Name = "café" }, "name"},
		{"group", func(p *ratelimit.Policy) { p.Group = "Tokens" }, "group"},
		{"no group", func(p *ratelimit.Policy) { p.Group = "" }, "group"},
		{"key", func(p *ratelimit.Policy) { p.Key = "session" }, "key"},
		{"capacity 0", func(p *ratelimit.Policy) { p.Capacity = 0 }, "capacity"},
		{"capacity 0.5", func(p *ratelimit.Policy) { p.Capacity = 0.5 }, "capacity"},
		{"capacity huge", func(p *ratelimit.Policy) { p.Capacity = 1e9 + 1 }, "capacity"},
		{"capacity NaN", func(p *ratelimit.Policy) { p.Capacity = math.NaN() }, "capacity"},
		{"capacity Inf", func(p *ratelimit.Policy) { p.Capacity = math.Inf(1) }, "capacity"},
		{"rate 0", func(p *ratelimit.Policy) { p.Rate = 0 }, "rate"},
		{"rate negative", func(p *ratelimit.Policy) { p.Rate = -1 }, "rate"},
		{"rate huge", func(p *ratelimit.Policy) { p.Rate = 2e9 }, "rate"},
		{"rate NaN", func(p *ratelimit.Policy) { p.Rate = math.NaN() }, "rate"},
		{"cost negative", func(p *ratelimit.Policy) { p.Cost = -1 }, "cost"},
		{"cost above capacity", func(p *ratelimit.Policy) { p.Cost = 201 }, "cost"},
		{"cost NaN", func(p *ratelimit.Policy) { p.Cost = math.NaN() }, "cost"},
		{"route cost 0", func(p *ratelimit.Policy) { p.Costs = map[string]float64{"GET /x": 0} }, "costs"},
		{"route cost above capacity", func(p *ratelimit.Policy) { p.Costs = map[string]float64{"GET /x": 201} }, "costs"},
		{"route cost NaN", func(p *ratelimit.Policy) { p.Costs = map[string]float64{"GET /x": math.NaN()} }, "costs"},
		{"empty route", func(p *ratelimit.Policy) { p.Costs = map[string]float64{"": 1} }, "costs"},
		{"long route", func(p *ratelimit.Policy) { p.Costs = map[string]float64{strings.Repeat("x", 257): 1} }, "costs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := ok
			tt.change(&p)
			err := p.Validate()
			switch {
			case tt.field == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.field != "" && err == nil:
				t.Errorf("Validate() = nil, want an error about %s", tt.field)
			case tt.field != "" && !strings.HasPrefix(err.Error(), tt.field+": "):
				t.Errorf("Validate() = %q, want it to start with %q", err, tt.field+": ")
			}
		})
	}
}

func TestValidateMessage(t *testing.T) {
	p := ratelimit.Policy{Name: "p", Group: ratelimit.GroupReads, Key: ratelimit.KeyIP, Rate: 1}
	if err := p.Validate(); err == nil || err.Error() != "capacity: must be 1 to 1e9, got 0" {
		t.Errorf("Validate() = %v", err)
	}
}

func TestDefaults(t *testing.T) {
	seen := map[string]bool{}
	for _, p := range ratelimit.Defaults() {
		if err := p.Validate(); err != nil {
			t.Errorf("%s: %v", p.Name, err)
		}
		if seen[p.Name] {
			t.Errorf("%s: twice", p.Name)
		}
		seen[p.Name] = true
		if p.Shadow || p.Off {
			t.Errorf("%s: a default is not enforced", p.Name)
		}
	}
	for _, g := range []string{ratelimit.GroupSession, ratelimit.GroupTokens, ratelimit.GroupPurchases, ratelimit.GroupQueue, ratelimit.GroupReads} {
		found := false
		for _, p := range ratelimit.Defaults() {
			found = found || p.Group == g
		}
		if !found {
			t.Errorf("no default for group %s", g)
		}
	}
	ratelimit.Defaults()[0].Name = "changed"
	if ratelimit.Defaults()[0].Name == "changed" {
		t.Error("Defaults shares its slice")
	}
}

func TestPolicyJSON(t *testing.T) {
	p := ratelimit.Policy{Name: "tokens-ip", Group: ratelimit.GroupTokens, Key: ratelimit.KeyIP, Capacity: 200, Rate: 100}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"name":"tokens-ip","group":"tokens","key":"ip","capacity":200,"rate":100}`; string(b) != want {
		t.Errorf("JSON %s, want %s", b, want)
	}
	p.Cost, p.Costs, p.Shadow, p.Off = 2, map[string]float64{"POST /x": 3}, true, true
	b, _ = json.Marshal(p)
	var q ratelimit.Policy
	if err := json.Unmarshal(b, &q); err != nil || !reflect.DeepEqual(p, q) {
		t.Errorf("round trip of %s: %+v, %v", b, q, err)
	}
}

func TestCostOfAndWindow(t *testing.T) {
	p := ratelimit.Policy{Capacity: 10, Rate: 3, Costs: map[string]float64{"POST /x": 4}}
	if p.CostOf("GET /y") != 1 || p.CostOf("POST /x") != 4 {
		t.Errorf("CostOf: %v %v", p.CostOf("GET /y"), p.CostOf("POST /x"))
	}
	p.Cost = 2
	if p.CostOf("GET /y") != 2 || p.CostOf("POST /x") != 4 {
		t.Errorf("CostOf with Cost 2: %v %v", p.CostOf("GET /y"), p.CostOf("POST /x"))
	}
	if w := p.Window(); w != 3333333334*time.Nanosecond {
		t.Errorf("Window() = %v, want 10/3 s rounded up", w)
	}
	if w := (ratelimit.Policy{Capacity: 1e9, Rate: 1e-9}).Window(); w != math.MaxInt64 {
		t.Errorf("Window() = %v, want saturated", w)
	}
	if w := (ratelimit.Policy{Capacity: 1}).Window(); w != 0 {
		t.Errorf("Window() with rate 0 = %v", w)
	}
}
