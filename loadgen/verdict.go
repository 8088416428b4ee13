package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"time"
)

// Figures are the sale's counters as the server reports them
// (GET /api/v1/admin/sales/{sale}) after the run.
type Figures struct {
	Stock             int64 `json:"stock"`
	Quota             int64 `json:"quota"`
	Sold              int64 `json:"sold"`
	TokensIssued      int64 `json:"tokensIssued"`
	TokensExpired     int64 `json:"tokensExpired"`
	TokensOutstanding int64 `json:"tokensOutstanding"`
}

// Verdict is the correctness check after a run. Checked is false when it
// was skipped; OK when it was made and found nothing wrong.
type Verdict struct {
	Checked  bool     `json:"checked"`
	OK       bool     `json:"ok"`
	Problems []string `json:"problems"`
}

// maxProblemsEach bounds how many problems of one sort are listed.
const maxProblemsEach = 5

// seen is what the generator saw in a whole run (warm-up included).
type seen struct {
	tokens []seenToken // token ids handed to shoppers
	orders int64       // purchases answered 202 with an order id
	names  []string    // shopper ids by pool index, for messages
}

// check returns every invariant of f and s that is broken:
//   - sold <= stock;
//   - tokens issued - expired <= quota (held or redeemed tokens never
//     exceed the quota);
//   - no shopper got two different token ids, and no token id went to two
//     shoppers (from the answers the generator saw);
//   - the server counts at least the tokens and the orders it acknowledged
//     to the generator (an acknowledged decision was not lost).
func check(f Figures, s seen) []string {
	problems := []string{}
	if f.Sold > f.Stock {
		problems = append(problems, fmt.Sprintf("oversold: sold %d > stock %d", f.Sold, f.Stock))
	}
	if held := f.TokensIssued - f.TokensExpired; held > f.Quota {
		problems = append(problems, fmt.Sprintf("quota exceeded: tokens issued - expired = %d > quota %d", held, f.Quota))
	}
	name := func(i int32) string {
		if int(i) < len(s.names) && s.names[i] != "" {
			return s.names[i]
		}
		return fmt.Sprintf("#%d", i)
	}
	byShopper := map[int32]string{}
	byToken := map[string]int32{}
	var twice, shared []string
	for _, t := range s.tokens {
		if id, ok := byShopper[t.shopper]; ok && id != t.id {
			twice = append(twice, fmt.Sprintf("shopper %s got two tokens, %s and %s", name(t.shopper), id, t.id))
		}
		byShopper[t.shopper] = t.id
		if who, ok := byToken[t.id]; ok && who != t.shopper {
			shared = append(shared, fmt.Sprintf("token %s went to two shoppers, %s and %s", t.id, name(who), name(t.shopper)))
		}
		byToken[t.id] = t.shopper
	}
	problems = append(problems, some(twice)...)
	problems = append(problems, some(shared)...)
	if n := int64(len(byToken)); n > f.TokensIssued {
		problems = append(problems, fmt.Sprintf("lost tokens: the generator was handed %d distinct tokens, the server counts %d issued", n, f.TokensIssued))
	}
	if s.orders > f.Sold {
		problems = append(problems, fmt.Sprintf("lost orders: %d purchases were acknowledged with an order, the server counts %d sold", s.orders, f.Sold))
	}
	return problems
}

// some is at most maxProblemsEach of ps, and a count of the rest.
func some(ps []string) []string {
	if len(ps) <= maxProblemsEach {
		return ps
	}
	sort.Strings(ps)
	return append(ps[:maxProblemsEach:maxProblemsEach], fmt.Sprintf("... and %d more like these", len(ps)-maxProblemsEach))
}

// figures reads the sale's counters.
func (r *runner) figures(ctx context.Context) (Figures, error) {
	var f Figures
	status, b, err := adminCall(ctx, r.hc, http.MethodGet, r.urls.adminSale, r.o.AdminToken, nil)
	if err != nil {
		return f, fmt.Errorf("read the sale's figures: %w", err)
	}
	if status != http.StatusOK {
		return f, fmt.Errorf("read the sale's figures: status %d: %.200s", status, b)
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("read the sale's figures: %w", err)
	}
	return f, nil
}

// verdict reads the server's figures and checks them against what the
// generator saw. A check that fails is made again a few times a moment
// later: a server whose counters lag its answers a little is not wrong.
func (r *runner) verdict(ctx context.Context, rep *Report) error {
	s := seen{names: r.pool.shopper}
	for _, rec := range r.recs {
		s.tokens = append(s.tokens, rec.seen...)
		s.orders += rec.orders
	}
	var problems []string
	for attempt := 0; ; attempt++ {
		f, err := r.figures(ctx)
		if err != nil {
			return err
		}
		rep.Figures = &f
		if problems = check(f, s); len(problems) == 0 || attempt == 3 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	rep.Verdict = Verdict{Checked: true, OK: len(problems) == 0, Problems: problems}
	return nil
}
