package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
)

const ordersUsage = `Usage:
  flashgate orders dlq list  [--sale S] [--limit N]
  flashgate orders dlq retry ORDER...
  flashgate orders dlq retry --all [--sale S]
Orders the fulfilment worker gave up (too many failed calls, past their
deadline, or refused by the provider) wait in the dead-letter stream. list
shows them; retry sends them back to the worker with a new deadline (an
OrderRequeued event records it).
Common flags: --url (default http://127.0.0.1:8080), --admin-token (default: the
data directory's admin-token file, see --data).
`

func ordersCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) < 2 || args[0] != "dlq" || (args[1] != "list" && args[1] != "retry") {
		fmt.Fprint(stderr, ordersUsage)
		return errUsage
	}
	verb, args := args[1], args[2:]
	fs := newFlags("orders dlq "+verb, stderr)
	base := fs.String("url", "http://127.0.0.1:8080", "base URL of the flashgate HTTP API")
	token := fs.String("admin-token", "", "admin token (default: read from the data directory)")
	data := fs.String("data", "data", "data directory to read the admin token from")
	sale := fs.String("sale", "", "only this sale's orders")
	limit := fs.Int("limit", 1000, "list: at most this many orders (1 to 10000)")
	all := fs.Bool("all", false, "retry: every dead-lettered order (of --sale, if given)")
	if err := parse(fs, args, getenv); err != nil {
		return err
	}
	if err := adminToken(token, *data); err != nil {
		return err
	}
	list := func(limit int) ([]byte, error) {
		q := url.Values{"limit": {strconv.Itoa(limit)}}
		if *sale != "" {
			q.Set("sale", *sale)
		}
		var out bytes.Buffer
		err := adminCall(ctx, *base, *token, http.MethodGet, "/api/v1/admin/orders/dlq?"+q.Encode(), nil, &out)
		return out.Bytes(), err
	}
	if verb == "list" {
		if fs.NArg() > 0 {
			return fmt.Errorf("list takes no arguments, got %q", fs.Arg(0))
		}
		b, err := list(*limit)
		if err != nil {
			return err
		}
		_, err = stdout.Write(b)
		return err
	}
	orders := fs.Args()
	switch {
	case *all && len(orders) > 0:
		return fmt.Errorf("retry takes order ids or --all, not both")
	case *all:
		b, err := list(10000)
		if err != nil {
			return err
		}
		var l struct {
			Orders []struct {
				OrderID string `json:"orderId"`
			} `json:"orders"`
		}
		if err := json.Unmarshal(b, &l); err != nil {
			return fmt.Errorf("dead-letter list: %w", err)
		}
		for _, o := range l.Orders {
			orders = append(orders, o.OrderID)
		}
	case len(orders) == 0:
		return fmt.Errorf("retry needs order ids, or --all")
	}
	failed := 0
	for _, o := range orders {
		if err := adminCall(ctx, *base, *token, http.MethodPost, "/api/v1/admin/orders/dlq/"+url.PathEscape(o)+"/retry", nil, io.Discard); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", o, err)
			failed++
			continue
		}
		fmt.Fprintf(stdout, "%s requeued\n", o)
	}
	fmt.Fprintf(stdout, "%d of %d orders requeued\n", len(orders)-failed, len(orders))
	if failed > 0 {
		return fmt.Errorf("%d orders not requeued", failed)
	}
	return nil
}
