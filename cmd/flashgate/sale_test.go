package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestSaleCreateQueue creates sales with a waiting room through the CLI:
// the flags reach the sale's JSON, and a queue flag without --queue is
// refused before the server is asked.
func TestSaleCreateQueue(t *testing.T) {
	_, cli := serveForCLI(t)
	opens := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	pre := opens.Add(-10 * time.Minute)
	code, out, errs := cli("sale", "create", "--id", "q", "--stock", "5", "--opens-at", opens.Format(time.RFC3339),
		"--queue", "--pre-queue-opens-at", pre.Format(time.RFC3339), "--admission-rate", "25", "--claim-window", "90s", "--idle-timeout", "30s")
	if code != 0 {
		t.Fatalf("sale create --queue: exit %d: %s %s", code, out, errs)
	}
	var s struct {
		Queue *struct {
			PreQueueOpensAt string
			AdmissionRate   float64
			ClaimWindow     string
			IdleTimeout     string
			Waiting         int
		}
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil || s.Queue == nil {
		t.Fatalf("sale create --queue printed %s (%v)", out, err)
	}
	if q := s.Queue; q.AdmissionRate != 25 || q.ClaimWindow != "1m30s" || q.IdleTimeout != "30s" || q.PreQueueOpensAt != pre.Format(time.RFC3339Nano) {
		t.Errorf("queue: %+v", *q)
	}
	if code, out, errs := cli("sale", "create", "--id", "d", "--stock", "5", "--queue"); code != 0 || !strings.Contains(out, `"admissionRate": 10`) {
		t.Fatalf("sale create --queue with defaults: exit %d: %s %s", code, out, errs)
	}
	if code, out, _ := cli("sale", "create", "--id", "n", "--stock", "5"); code != 0 || !strings.Contains(out, `"queue": null`) {
		t.Fatalf("a sale without a queue: exit %d: %s", code, out)
	}
	if code, _, errs := cli("sale", "create", "--id", "x", "--stock", "5", "--admission-rate", "5"); code == 0 || !strings.Contains(errs, "need --queue") {
		t.Fatalf("--admission-rate without --queue: exit %d: %s", code, errs)
	}
	if code, _, errs := cli("sale", "create", "--id", "x", "--stock", "5", "--queue", "--claim-window", "10m"); code == 0 || !strings.Contains(errs, "queue.claimWindow") {
		t.Fatalf("a claim window past the token's life: exit %d: %s", code, errs)
	}
}
