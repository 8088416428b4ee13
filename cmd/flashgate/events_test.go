package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/app"
	"github.com/flashgate/flashgate/internal/fgtest"
)

func noEnv(string) string { return "" }

// startInstallation serves an installation on dir with the demo sale.
func startInstallation(t *testing.T, dir string, natsListen string) *app.App {
	t.Helper()
	return bkStartApp(t, app.Config{Data: dir, Demo: true, NATSListen: natsListen})
}

// getToken has a new shopper ask the demo sale for a token and returns the
// token id.
func getToken(t *testing.T, a *app.App) string {
	t.Helper()
	code, s, err := call(t, "POST", a.URL+"/api/v1/session", "", nil, nil)
	if err != nil || code != http.StatusCreated {
		t.Fatalf("session: %d %v %v", code, s, err)
	}
	code, tok, err := call(t, "POST", a.URL+"/api/v1/sales/demo/tokens", s["session"].(string), nil, nil)
	if err != nil || code != http.StatusCreated {
		t.Fatalf("token: %d %v %v", code, tok, err)
	}
	return tok["tokenId"].(string)
}

func runEvents(t *testing.T, ctx context.Context, getenv func(string) string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = eventsCmd(ctx, args, getenv, &out, &errOut)
	return out.String(), errOut.String(), err
}

// TestEventsOnStoppedInstallation runs export and tail end to end on the
// data directory of an installation that served a token and stopped.
func TestEventsOnStoppedInstallation(t *testing.T) {
	dir := t.TempDir()
	a := startInstallation(t, dir, "")
	tok1, tok2 := getToken(t, a), getToken(t, a)

	// While it runs, the data directory is locked: the error says what to do.
	_, _, err := runEvents(t, context.Background(), noEnv, "export", "--data", dir)
	if err == nil || !strings.Contains(err.Error(), "--nats-url") {
		t.Fatalf("export on a running installation: %v", err)
	}
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// CSV of everything, atomically to a file.
	file := filepath.Join(t.TempDir(), "events.csv")
	stdout, stderr, err := runEvents(t, ctx, noEnv, "export", "--data", dir, "--format", "csv", "--out", file)
	if err != nil {
		t.Fatalf("export: %v\n%s", err, stderr)
	}
	if stdout != "" {
		t.Errorf("stdout %q with --out", stdout)
	}
	if want := "exported 5 events (0 undecodable) from 5 messages of 1 sale, sequences 1..5, to " + file + "\n"; stderr != want {
		t.Errorf("summary %q, want %q", stderr, want)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(bytes.NewReader(raw)).ReadAll()
	if err != nil {
		t.Fatalf("CSV: %v\n%s", err, raw)
	}
	col := map[string]int{}
	for i, c := range rows[0] {
		col[c] = i
	}
	for _, c := range []string{"seq", "idx", "time", "sale", "type", "id", "shopper", "request", "token_id", "order_id",
		"reason", "already_issued", "expires_at", "client_request_id", "batch", "writer"} {
		if _, ok := col[c]; !ok {
			t.Errorf("no column %s in %q", c, rows[0])
		}
	}
	var got []string
	for _, r := range rows[1:] {
		got = append(got, fmt.Sprintf("%s.%s %s %s %s", r[col["seq"]], r[col["idx"]], r[col["sale"]], r[col["type"]], r[col["token_id"]]))
	}
	want := []string{"1.0 demo SaleCreated ", "2.0 demo TokenRequested ", "3.0 demo TokenIssued " + tok1,
		"4.0 demo TokenRequested ", "5.0 demo TokenIssued " + tok2}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if entries, _ := os.ReadDir(filepath.Dir(file)); len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}

	// JSON lines of one type to stdout; the format from the environment.
	env := func(k string) string {
		return map[string]string{"FLASHGATE_DATA": dir, "FLASHGATE_FORMAT": "jsonl", "FLASHGATE_TYPE": "SaleCreated"}[k]
	}
	stdout, stderr, err = runEvents(t, ctx, env, "export", "--sale", "demo", "--type", "tokenissued")
	if err != nil {
		t.Fatalf("export: %v\n%s", err, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines:\n%s", len(lines), stdout)
	}
	for i, l := range lines {
		var m struct {
			Seq    uint64 `json:"seq"`
			Idx    int    `json:"idx"`
			Type   string `json:"type"`
			Batch  uint64 `json:"batch"`
			Writer string `json:"writer"`
			Data   struct {
				TokenID string `json:"tokenId"`
			} `json:"data"`
		}
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		if m.Type != "TokenIssued" || m.Data.TokenID != []string{tok1, tok2}[i] || m.Batch != uint64(i+1) || m.Writer == "" {
			t.Errorf("line %d: %s", i+1, l)
		}
	}

	// tail --last 2 prints the last two events, then waits until cancelled.
	tctx, tcancel := context.WithCancel(ctx)
	var out syncWriter
	var buf bytes.Buffer
	out.w = &buf
	done := make(chan error, 1)
	go func() {
		done <- eventsCmd(tctx, []string{"tail", "--data", dir, "--last", "2"}, noEnv, &out, io.Discard)
	}()
	fgtest.WaitFor(t, 30*time.Second, func() error {
		out.mu.Lock()
		defer out.mu.Unlock()
		if n := strings.Count(buf.String(), "\n"); n != 2 {
			return fmt.Errorf("%d lines: %q", n, buf.String())
		}
		return nil
	})
	select {
	case err := <-done:
		t.Fatalf("tail ended by itself: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	tcancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("tail: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tail did not stop on cancel")
	}
	out.mu.Lock()
	tail := strings.Split(strings.TrimSpace(buf.String()), "\n")
	out.mu.Unlock()
	if !strings.HasPrefix(tail[0], "4.0 ") || !strings.Contains(tail[0], " demo TokenRequested ") ||
		!strings.HasPrefix(tail[1], "5.0 ") || !strings.Contains(tail[1], " token_id="+tok2+" ") {
		t.Errorf("tail printed:\n%s", strings.Join(tail, "\n"))
	}
}

// TestEventsTailOverNATS follows a running installation through its NATS
// listener: a token issued after tail started is printed.
func TestEventsTailOverNATS(t *testing.T) {
	a := startInstallation(t, t.TempDir(), "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var buf bytes.Buffer
	out := &syncWriter{w: &buf}
	done := make(chan error, 1)
	go func() {
		done <- eventsCmd(ctx, []string{"tail", "--nats-url", a.NATSPublic, "--sale", "demo", "--type", "TokenIssued", "--format", "jsonl"},
			noEnv, out, io.Discard)
	}()
	// Tokens until one is printed: the first may come before tail's consumer.
	var issued []string
	fgtest.WaitFor(t, 30*time.Second, func() error {
		issued = append(issued, getToken(t, a))
		out.mu.Lock()
		defer out.mu.Unlock()
		if !strings.Contains(buf.String(), `"type":"TokenIssued"`) {
			return errors.New("nothing printed yet")
		}
		return nil
	})
	// Every token issued after the first one printed is printed too.
	lastTok := issued[len(issued)-1]
	fgtest.WaitFor(t, 10*time.Second, func() error {
		out.mu.Lock()
		defer out.mu.Unlock()
		if !strings.Contains(buf.String(), lastTok) {
			return fmt.Errorf("tail printed %s, not the last token %s", buf.String(), lastTok)
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("tail: %v", err)
	}
}

func TestEventsUsageErrors(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		args []string
		want string // in the error or on stderr
	}{
		{nil, "flashgate events tail"},
		{[]string{"follow"}, `unknown subcommand "follow"`},
		{[]string{"export", "--type", "TokenIssued,Bogus"}, "TokenIssued, TokenDenied, TokenExpired"},
		{[]string{"tail", "--from-seq", "3", "--last", "2"}, "choose one of --from-seq, --since and --last"},
		{[]string{"export", "--format", "xml"}, `unknown format "xml"`},
		{[]string{"export", "--sale", "fg.>"}, `--sale "fg.>"`},
		{[]string{"export", "--since", "yesterday"}, `--since "yesterday"`},
		{[]string{"tail", "--out", "x"}, "flag provided but not defined: -out"},
		{[]string{"export", "--data", t.TempDir()}, "no flashgate installation"},
		{[]string{"export", "--data", t.TempDir(), "--out", filepath.Join(t.TempDir(), "no", "such", "dir.csv")}, "--out"},
	} {
		_, stderr, err := runEvents(t, ctx, noEnv, tc.args...)
		if err == nil {
			t.Errorf("%q: no error", tc.args)
			continue
		}
		if !strings.Contains(err.Error()+stderr, tc.want) {
			t.Errorf("%q: %v %s; want %q", tc.args, err, stderr, tc.want)
		}
	}
	stdout, _, err := runEvents(t, ctx, noEnv, "help")
	if err != nil || !strings.Contains(stdout, "--nats-listen") {
		t.Errorf("help: %v %s", err, stdout)
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"15m":                         now.Add(-15 * time.Minute),
		"2026-04-30T10:00:00Z":        time.Date(2026, 4, 30, 10, 0, 0, 0, time.UTC),
		"2026-04-30T10:00:00.5+02:00": time.Date(2026, 4, 30, 8, 0, 0, 5e8, time.UTC),
		"2026-04-30":                  time.Date(2026, 4, 30, 0, 0, 0, 0, time.UTC),
	} {
		got, err := parseSince(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("%s: %v %v, want %v", in, got, err, want)
		}
	}
	if _, err := parseSince("-5m", now); err == nil {
		t.Error("-5m accepted")
	}
}
