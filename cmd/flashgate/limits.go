package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/flashgate/flashgate/ratelimit"
)

const limitsUsage = `Usage:
  flashgate limits list
  flashgate limits set NAME --group G --key ip|shopper --capacity N --rate R
                       [--cost C] [--route-cost "ROUTE=C"]... [--shadow] [--off]
  flashgate limits reset NAME
Policies are stored in NATS (FLASHGATE_LIMITS) and every process applies a
change within a moment, without a restart. set replaces a policy of the same
name (a built-in one too: list shows them); reset deletes the stored setting,
so a built-in policy of that name applies again.
Groups: session, tokens, purchases, queue, reads. Each process enforces
capacity and rate divided by the number of live processes.
Common flags: --url (default http://127.0.0.1:8080), --admin-token (default:
the data directory's admin-token file, see --data).
`

// routeCosts is a repeatable --route-cost "ROUTE=COST" flag.
type routeCosts map[string]float64

func (r routeCosts) String() string { return fmt.Sprint(map[string]float64(r)) }

func (r routeCosts) Set(v string) error {
	route, cost, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("want ROUTE=COST, like \"POST /api/v1/sales/{sale}/tokens=2\"")
	}
	c, err := strconv.ParseFloat(strings.TrimSpace(cost), 64)
	if err != nil {
		return fmt.Errorf("cost %q is not a number", cost)
	}
	r[strings.TrimSpace(route)] = c
	return nil
}

func limitsCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, limitsUsage)
		return errUsage
	}
	verb, args := args[0], args[1:]
	fs := newFlags("limits "+verb, stderr)
	base := fs.String("url", "http://127.0.0.1:8080", "base URL of the flashgate HTTP API")
	token := fs.String("admin-token", "", "admin token (default: read from the data directory)")
	data := fs.String("data", "data", "data directory to read the admin token from")
	var p ratelimit.Policy
	costs := routeCosts{}
	method, path := http.MethodGet, "/api/v1/admin/limits"
	var body any
	// The policy name comes first for set and reset; flags follow it.
	name := ""
	if (verb == "set" || verb == "reset") && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	switch verb {
	case "list":
	case "set":
		fs.StringVar(&p.Group, "group", "", "route group: session, tokens, purchases, queue or reads")
		fs.StringVar(&p.Key, "key", "", "count by ip or shopper")
		fs.Float64Var(&p.Capacity, "capacity", 0, "burst: requests a full bucket allows at once")
		fs.Float64Var(&p.Rate, "rate", 0, "refill: requests per second sustained")
		fs.Float64Var(&p.Cost, "cost", 0, "what one request costs (default 1)")
		fs.Var(costs, "route-cost", "per-route cost, ROUTE=COST with ROUTE a mux pattern (repeatable)")
		fs.BoolVar(&p.Shadow, "shadow", false, "decide and count, never refuse (calibration)")
		fs.BoolVar(&p.Off, "off", false, "disable the policy")
		method = http.MethodPut
	case "reset":
		method = http.MethodDelete
	default:
		fmt.Fprintf(stderr, "flashgate limits: unknown verb %q\n\n%s", verb, limitsUsage)
		return errUsage
	}
	if err := parse(fs, args, getenv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if verb != "list" {
		if name == "" {
			return fmt.Errorf("%s needs a policy name first: flashgate limits %s NAME ...", verb, verb)
		}
		path += "/" + url.PathEscape(name)
	}
	if verb == "set" {
		p.Name = name
		if len(costs) > 0 {
			p.Costs = costs
		}
		if err := p.Validate(); err != nil {
			return err
		}
		body = p
	}
	if err := adminToken(token, *data); err != nil {
		return err
	}
	return adminCall(ctx, *base, *token, method, path, body, stdout)
}

var _ flag.Value = routeCosts{}
