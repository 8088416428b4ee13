package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestLimitsCommand sets, lists and resets a policy on a running server
// through the CLI, and creates a sale with a human check.
func TestLimitsCommand(t *testing.T) {
	srv, cli := serveForCLI(t)
	// set takes the name first, then flags.
	if code, out, errs := cli("limits", "set", "tokens-shopper", "--group", "tokens", "--key", "shopper", "--capacity", "4", "--rate", "0.5",
		"--route-cost", "POST /api/v1/sales/{sale}/challenge=2", "--shadow"); code != 0 {
		t.Fatalf("limits set: exit %d: %s %s", code, out, errs)
	}
	code, out, errs := cli("limits", "list")
	if code != 0 {
		t.Fatalf("limits list: exit %d: %s", code, errs)
	}
	var listed struct {
		Enabled  bool
		Policies []struct {
			Policy struct {
				Name     string
				Capacity float64
				Shadow   bool
				Costs    map[string]float64
			}
			Stored bool
		}
	}
	if err := json.Unmarshal([]byte(out), &listed); err != nil {
		t.Fatalf("limits list output: %v\n%s", err, out)
	}
	found := false
	for _, p := range listed.Policies {
		if p.Policy.Name == "tokens-shopper" {
			found = true
			// The watch applies the stored policy within moments; the
			// stored flag is immediate.
			if !p.Stored {
				t.Errorf("tokens-shopper not marked stored: %+v", p)
			}
		}
	}
	if !found || !listed.Enabled {
		t.Fatalf("limits list: %s", out)
	}
	// Invalid input is refused before the server is asked, naming the field.
	if code, _, errs := cli("limits", "set", "x", "--group", "nope", "--key", "ip", "--capacity", "1", "--rate", "1"); code == 0 || !strings.Contains(errs, "group") {
		t.Fatalf("an invalid policy: exit %d: %s", code, errs)
	}
	if code, _, errs := cli("limits", "set", "--group", "tokens"); code == 0 || !strings.Contains(errs, "policy name") {
		t.Fatalf("set without a name: exit %d: %s", code, errs)
	}
	if code, out, errs := cli("limits", "reset", "tokens-shopper"); code != 0 {
		t.Fatalf("limits reset: exit %d: %s %s", code, out, errs)
	}
	if code, _, errs := cli("limits", "reset", "tokens-shopper"); code == 0 || !strings.Contains(errs, "policy_not_set") {
		t.Fatalf("resetting an unset policy: exit %d: %s", code, errs)
	}

	// A sale with a proof-of-work check, made by the CLI, and solved by it.
	if code, out, errs := cli("sale", "create", "--id", "pow", "--stock", "3", "--challenge", "pow", "--difficulty", "6"); code != 0 ||
		!strings.Contains(out, `"difficulty": 6`) {
		t.Fatalf("sale create --challenge: exit %d: %s %s", code, out, errs)
	}
	c, s, err := call(t, "POST", srv.url+"/api/v1/session", "", nil, nil)
	if err != nil || c != 201 {
		t.Fatal(c, err)
	}
	c, pz, err := call(t, "POST", srv.url+"/api/v1/sales/pow/challenge", s["session"].(string), nil, nil)
	if err != nil || c != 201 {
		t.Fatalf("challenge: %d %v %v", c, pz, err)
	}
	raw, _ := json.Marshal(pz)
	var sol, serr bytes.Buffer
	if code := solveCmd(context.Background(), nil, bytes.NewReader(raw), &sol, &serr); code != nil {
		t.Fatalf("solve: %v %s", code, serr.String())
	}
	c, tk, err := call(t, "POST", srv.url+"/api/v1/sales/pow/tokens", s["session"].(string),
		map[string]string{"X-Challenge-Solution": strings.TrimSpace(sol.String())}, nil)
	if err != nil || c != 201 {
		t.Fatalf("token with the CLI's solution: %d %v %v", c, tk, err)
	}
}

func TestSolveRefuses(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		stdin string
	}{
		{nil, `{"kind":"captcha"}`},
		{nil, `not json`},
		{[]string{"abc", "99"}, ""},
		{[]string{"abc", "x"}, ""},
	} {
		var out, errb bytes.Buffer
		if err := solveCmd(context.Background(), tc.args, strings.NewReader(tc.stdin), &out, &errb); err == nil {
			t.Errorf("solve %v <%q: no error, printed %q", tc.args, tc.stdin, out.String())
		}
	}
}
