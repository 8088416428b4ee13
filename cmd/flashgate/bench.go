package main

import (
	"context"
	"io"

	"github.com/flashgate/flashgate/loadgen"
)

func bench(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlags("bench", stderr)
	var c loadgen.Config
	fs.StringVar(&c.URL, "url", "http://127.0.0.1:8080", "base URL of the server under test")
	fs.StringVar(&c.AdminToken, "admin-token", "", "admin token (default: read from --data)")
	data := fs.String("data", "data", "data directory to read the admin token from")
	fs.StringVar(&c.Sale, "sale", "", "sale to race for (default: create bench-<time> with --stock)")
	fs.Int64Var(&c.Stock, "stock", 0, "stock of the created sale (default: one unit per shopper, so every request succeeds)")
	fs.IntVar(&c.Shoppers, "shoppers", 10000, "distinct shoppers, each with its own session")
	fs.IntVar(&c.Concurrency, "concurrency", 64, "requests in flight")
	fs.BoolVar(&c.Buy, "buy", false, "shoppers with a token then buy")
	if err := parse(fs, args, getenv); err != nil {
		return err
	}
	if err := adminToken(&c.AdminToken, *data); err != nil {
		return err
	}
	r, err := loadgen.Run(ctx, c)
	if err != nil {
		return err
	}
	r.Write(stdout)
	if len(r.Verdict) > 0 {
		return loadgen.ErrIncorrect
	}
	return nil
}
