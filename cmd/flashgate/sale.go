package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/flashgate/flashgate/app"
)

const saleUsage = `Usage:
  flashgate sale create --id ID --stock N [--quota-buffer 1.2] [--per-user-limit 1]
                        [--token-ttl 5m] [--opens-at RFC3339] [--closes-at RFC3339]
                        [--challenge pow|captcha] [--difficulty N] [--signed-requests]
                        [--queue [--pre-queue-opens-at RFC3339] [--admission-rate 10]
                                 [--claim-window 2m] [--idle-timeout 1m]]
  flashgate sale get ID
  flashgate sale list
Common flags: --url (default http://127.0.0.1:8080), --admin-token (default: the
data directory's admin-token file, see --data).
`

func sale(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, saleUsage)
		return errUsage
	}
	verb, args := args[0], args[1:]
	fs := newFlags("sale "+verb, stderr)
	url := fs.String("url", "http://127.0.0.1:8080", "base URL of the flashgate HTTP API")
	token := fs.String("admin-token", "", "admin token (default: read from the data directory)")
	data := fs.String("data", "data", "data directory to read the admin token from")
	var body map[string]any
	switch verb {
	case "create":
		id := fs.String("id", "", "sale id: 1-64 of a-z 0-9 - _")
		stock := fs.Int64("stock", 0, "units for sale")
		buffer := fs.Float64("quota-buffer", 1.2, "quota = ceil(stock x buffer) purchase tokens may be held at once")
		limit := fs.Int64("per-user-limit", 1, "units one shopper may buy")
		ttl := fs.Duration("token-ttl", 5*time.Minute, "purchase token lifetime (1s to 24h)")
		opens := fs.String("opens-at", "", "opening time, RFC 3339 (default: now)")
		closes := fs.String("closes-at", "", "closing time, RFC 3339 (default: never)")
		check := fs.String("challenge", "", "human check before token requests: pow or captcha (default: none)")
		difficulty := fs.Int("difficulty", 0, "proof-of-work difficulty in leading zero bits (default: the server's, 19)")
		signed := fs.Bool("signed-requests", false, "token and purchase requests must be signed by the shop's app (X-Signature)")
		queue := fs.Bool("queue", false, "a waiting room in front of the tokens: shoppers join, tokens come by admission")
		preQueue := fs.String("pre-queue-opens-at", "", "with --queue: when shoppers may join before the opening, RFC 3339 (drawn in random order at the opening; default: joins open with the sale)")
		rate := fs.Float64("admission-rate", 0, "with --queue: admissions per second at most (default 10)")
		claim := fs.Duration("claim-window", 0, "with --queue: an admitted shopper's time to take the token (default 2m)")
		idle := fs.Duration("idle-timeout", 0, "with --queue: a waiting shopper's silence that loses the place when the turn comes (default 1m)")
		if err := parse(fs, args, getenv); err != nil {
			return err
		}
		body = map[string]any{"id": *id, "stock": *stock, "quotaBuffer": *buffer, "perUserLimit": *limit, "tokenTTL": ttl.String()}
		if *opens != "" {
			body["opensAt"] = *opens
		}
		if *closes != "" {
			body["closesAt"] = *closes
		}
		switch {
		case *check != "":
			c := map[string]any{"kind": *check}
			if *difficulty != 0 {
				c["difficulty"] = *difficulty
			}
			body["challenge"] = c
		case *difficulty != 0:
			return fmt.Errorf("--difficulty needs --challenge pow")
		}
		if *signed {
			body["signedRequests"] = true
		}
		switch {
		case *queue:
			q := map[string]any{"enabled": true}
			if *preQueue != "" {
				q["preQueueOpensAt"] = *preQueue
			}
			if *rate != 0 {
				q["admissionRate"] = *rate
			}
			if *claim != 0 {
				q["claimWindow"] = claim.String()
			}
			if *idle != 0 {
				q["idleTimeout"] = idle.String()
			}
			body["queue"] = q
		case *preQueue != "" || *rate != 0 || *claim != 0 || *idle != 0:
			return fmt.Errorf("--pre-queue-opens-at, --admission-rate, --claim-window and --idle-timeout need --queue")
		}
	case "get", "list":
		if err := parse(fs, args, getenv); err != nil {
			return err
		}
	default:
		fmt.Fprintf(stderr, "flashgate sale: unknown verb %q\n\n%s", verb, saleUsage)
		return errUsage
	}
	if err := adminToken(token, *data); err != nil {
		return err
	}
	method, path := http.MethodGet, "/api/v1/admin/sales"
	switch verb {
	case "create":
		method = http.MethodPost
	case "get":
		if fs.NArg() != 1 {
			return fmt.Errorf("get takes one sale id")
		}
		path += "/" + fs.Arg(0)
	}
	return adminCall(ctx, *url, *token, method, path, body, stdout)
}

func adminCall(ctx context.Context, base, token, method, path string, body any, stdout io.Writer) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(base, "/")+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	var pretty bytes.Buffer
	if json.Indent(&pretty, raw, "", "  ") != nil {
		pretty.Reset()
		pretty.Write(raw)
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(pretty.String()))
	}
	fmt.Fprintln(stdout, pretty.String())
	return nil
}

// adminToken fills an empty *token from the data directory's admin-token
// file (the admin commands' default).
func adminToken(token *string, data string) error {
	if *token != "" {
		return nil
	}
	b, err := os.ReadFile(app.DataDir(data).AdminToken())
	if err != nil {
		return fmt.Errorf("no --admin-token and none readable in %s: %v", data, err)
	}
	*token = strings.TrimSpace(string(b))
	return nil
}
