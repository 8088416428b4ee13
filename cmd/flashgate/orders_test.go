package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestOrdersDLQCommand: an order the provider refuses is listed by
// `orders dlq list` and sent back by `orders dlq retry --all`; the provider
// then takes it.
func TestOrdersDLQCommand(t *testing.T) {
	var take atomic.Bool
	prov := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/oauth/token":
			fmt.Fprint(w, `{"access_token":"t","token_type":"Bearer","expires_in":3600}`)
		case !take.Load():
			w.WriteHeader(http.StatusUnprocessableEntity)
			fmt.Fprint(w, `{"error":"unknown_item"}`)
		default:
			w.WriteHeader(http.StatusCreated)
			fmt.Fprint(w, `{"reference":"R-1"}`)
		}
	}))
	t.Cleanup(prov.Close)
	data := t.TempDir()
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := serveInProcess(t, func(string) string { return "" }, "--data", data, "--http", "127.0.0.1:0", "--demo=false",
		"--rate-limit=off", "--provider-url", prov.URL, "--provider-client-secret-file", secret)
	t.Cleanup(func() { srv.Stop(t) })
	cli := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(context.Background(), append(args, "--url", srv.url, "--data", data), func(string) string { return "" }, &out, &errb)
		return code, out.String(), errb.String()
	}
	if code, out, errs := cli("sale", "create", "--id", "s", "--stock", "3"); code != 0 {
		t.Fatalf("sale create: %d %s %s", code, out, errs)
	}
	_, s, err := call(t, "POST", srv.url+"/api/v1/session", "", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	session := s["session"].(string)
	_, tk, _ := call(t, "POST", srv.url+"/api/v1/sales/s/tokens", session, nil, nil)
	code, p, _ := call(t, "POST", srv.url+"/api/v1/sales/s/purchases", session, map[string]string{"X-Purchase-Token": tk["token"].(string)}, nil)
	order, _ := p["orderId"].(string)
	if code != 202 || order == "" {
		t.Fatalf("purchase: %d %v", code, p)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, out, _ := cli("orders", "dlq", "list", "--sale", "s")
		if code == 0 && strings.Contains(out, order) && strings.Contains(out, `"reason": "rejected"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the order never reached the dead-letter list: %d %s", code, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	take.Store(true)
	if code, out, errs := cli("orders", "dlq", "retry", "--all"); code != 0 || !strings.Contains(out, order+" requeued") || !strings.Contains(out, "1 of 1 orders requeued") {
		t.Fatalf("retry --all: %d %s %s", code, out, errs)
	}
	var out, errb bytes.Buffer // flags before the order ids
	if code := run(context.Background(), []string{"orders", "dlq", "retry", "--url", srv.url, "--data", data, order}, func(string) string { return "" }, &out, &errb); code == 0 || !strings.Contains(errb.String(), "order_not_dead") {
		errs := errb.String()
		t.Fatalf("retry of an order no longer dead: %d %s", code, errs)
	}
	for {
		code, o, _ := call(t, "GET", srv.url+"/api/v1/orders/"+order, session, nil, nil)
		if code == 200 && o["status"] == "confirmed" && o["reference"] == "R-1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("order after the retry: %d %v", code, o)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, bad := range [][]string{{"orders"}, {"orders", "dlq"}, {"orders", "dlq", "purge"}, {"orders", "dlq", "retry"}, {"orders", "dlq", "retry", "--all", order}} {
		if code, _, _ := cli(bad...); code == 0 {
			t.Errorf("%v: exit 0", bad)
		}
	}
}
