package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestClusterStatus: a serving process shows itself, the sale it writes
// for and that sale's lease.
func TestClusterStatus(t *testing.T) {
	_, cli := serveForCLI(t)
	if code, out, errs := cli("sale", "create", "--id", "c1", "--stock", "3"); code != 0 {
		t.Fatalf("sale create: %d %s %s", code, out, errs)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, out, errs := cli("cluster", "status", "--json")
		if code != 0 {
			t.Fatalf("cluster status: %d %s %s", code, out, errs)
		}
		var v struct {
			Processes []struct {
				Node string
				HTTP string
				Owns []string
			}
			Leases []struct {
				Sale, Owner string
			}
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatal(err)
		}
		if len(v.Processes) == 1 && len(v.Leases) == 1 && v.Leases[0].Sale == "c1" && v.Leases[0].Owner == v.Processes[0].Node &&
			strings.Join(v.Processes[0].Owns, ",") == "c1" && strings.HasPrefix(v.Processes[0].HTTP, "http://127.0.0.1:") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster status: %s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	code, out, _ := cli("cluster", "status")
	if code != 0 || !strings.Contains(out, "1 processes, 1 sale leases") || !strings.Contains(out, "WRITES FOR") || !strings.Contains(out, "c1") {
		t.Fatalf("cluster status table: %d\n%s", code, out)
	}
	if code, _, _ := cli("cluster", "stat"); code == 0 {
		t.Fatal("an unknown verb exit 0")
	}
}
