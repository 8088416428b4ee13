package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flashgate/flashgate/challenge"
)

// buildBinary builds flashgate once per test run.
var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "flashgate-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "flashgate")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// child is a flashgate serve process.
type child struct {
	cmd   *exec.Cmd
	url   string
	admin string
	out   *bytes.Buffer
}

func startChild(t *testing.T, data string) *child {
	t.Helper()
	cmd := exec.Command(binary(t), "serve", "--data", data, "--http", "127.0.0.1:0", "--demo=false", "--session-rate=-1", "--rate-limit=off")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := &bytes.Buffer{}
	cmd.Stderr = &syncWriter{w: logs}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, out: logs}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.After(60 * time.Second)
	for c.url == "" || c.admin == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("serve exited before it served; stderr:\n%s", logs.String())
			}
			if u, ok := strings.CutPrefix(l, "flashgate is serving on "); ok {
				c.url = u
			}
			if a, ok := strings.CutPrefix(strings.TrimSpace(l), "admin token: "); ok {
				c.admin = a
			}
		case <-deadline:
			t.Fatalf("serve did not start in time; stderr:\n%s", logs.String())
		}
	}
	go func() {
		for range lines {
		}
	}()
	return c
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func call(t *testing.T, method, url, bearer string, hdr map[string]string, body any) (int, map[string]any, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m, nil
}

type success struct {
	session, shopper, tokenID, token, orderID string
}

// TestCrashKeepsAcknowledgedDecisions kills a serving process with SIGKILL
// in the middle of a load, restarts it on the same data, and checks that
// every token and order that got a success reply is still there, that
// nothing was oversold, and that the audit passes.
func TestCrashKeepsAcknowledgedDecisions(t *testing.T) {
	data := t.TempDir()
	c := startChild(t, data)
	const stock = 150
	if code, body, err := call(t, "POST", c.url+"/api/v1/admin/sales", c.admin, nil,
		map[string]any{"id": "crash", "stock": stock, "tokenTTL": "30m"}); err != nil || code != 201 {
		t.Fatalf("create sale: %d %v %v", code, body, err)
	}
	var mu sync.Mutex
	var acked []success
	var kills atomic.Bool
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && !kills.Load() {
				code, s, err := call(t, "POST", c.url+"/api/v1/session", "", nil, nil)
				if err != nil || code != 201 {
					return
				}
				sess, shopper := s["session"].(string), s["shopper"].(string)
				code, tk, err := call(t, "POST", c.url+"/api/v1/sales/crash/tokens", sess, nil, nil)
				if err != nil || code != 201 {
					continue
				}
				got := success{session: sess, shopper: shopper, tokenID: tk["tokenId"].(string), token: tk["token"].(string)}
				code, p, err := call(t, "POST", c.url+"/api/v1/sales/crash/purchases", sess,
					map[string]string{"X-Purchase-Token": got.token}, nil)
				if err == nil && code == 202 && p["orderId"] != nil {
					got.orderID = p["orderId"].(string)
				}
				mu.Lock()
				acked = append(acked, got)
				mu.Unlock()
			}
		}()
	}
	// Kill once a good share of the stock has been acknowledged.
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= stock/2 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("load made no progress; stderr:\n%s", c.out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	kills.Store(true)
	_ = c.cmd.Wait()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("killed after %d acknowledged token replies", len(acked))

	c2 := startChild(t, data)
	orders := 0
	for _, s := range acked {
		if s.orderID == "" {
			// The token must still be held: asking again returns it. Unless
			// its purchase was in flight at the kill: committed, reply lost.
			// Then the retry of that purchase names the order (recoverable).
			code, b, err := call(t, "POST", c2.url+"/api/v1/sales/crash/tokens", s.session, nil, nil)
			if err == nil && code == 409 && b["error"] == "limit_reached" {
				code, b, err = call(t, "POST", c2.url+"/api/v1/sales/crash/purchases", s.session, map[string]string{"X-Purchase-Token": s.token}, nil)
				if err != nil || code != 409 || b["error"] != "token_used" || b["orderId"] == nil {
					t.Errorf("token %s: bought while the reply was lost, but the retry does not name the order: %d %v %v", s.tokenID, code, b, err)
				}
				continue
			}
			if err != nil || code != 200 || b["tokenId"] != s.tokenID {
				t.Errorf("acknowledged token %s of %s lost: %d %v %v", s.tokenID, s.shopper, code, b, err)
			}
			continue
		}
		orders++
		deadline := time.Now().Add(20 * time.Second)
		for {
			code, b, err := call(t, "GET", c2.url+"/api/v1/orders/"+s.orderID, s.session, nil, nil)
			if err == nil && code == 200 && b["orderId"] == s.orderID { // accepted, or already confirmed by the fulfilment
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("acknowledged order %s lost: %d %v %v", s.orderID, code, b, err)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		// Its token is used: the retry names the same order.
		code, b, _ := call(t, "POST", c2.url+"/api/v1/sales/crash/purchases", s.session, map[string]string{"X-Purchase-Token": s.token}, nil)
		if code != 409 || b["orderId"] != s.orderID {
			t.Errorf("retry of a bought token: %d %v", code, b)
		}
	}
	code, sale, err := call(t, "GET", c2.url+"/api/v1/admin/sales/crash", c2.admin, nil, nil)
	if err != nil || code != 200 {
		t.Fatalf("sale: %d %v", code, err)
	}
	if sold := int(sale["sold"].(float64)); sold > stock || sold < orders {
		t.Errorf("sold %d: stock %d, acknowledged orders %d", sold, stock, orders)
	}
	t.Logf("after restart: %d acknowledged orders found, sale %v", orders, sale)
	if err := c2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := c2.cmd.Wait(); err != nil {
		t.Fatalf("clean stop: %v\n%s", err, c2.out.String())
	}
	out, err := exec.Command(binary(t), "audit", "--data", data).CombinedOutput()
	if err != nil {
		t.Fatalf("audit after the crash: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

func TestRunUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), nil, func(string) string { return "" }, &out, &errb); code != 2 {
		t.Errorf("no command: exit %d", code)
	}
	if code := run(context.Background(), []string{"nope"}, func(string) string { return "" }, &out, &errb); code != 2 {
		t.Errorf("unknown command: exit %d", code)
	}
	errb.Reset()
	if code := run(context.Background(), []string{"serve", "--http"}, func(string) string { return "" }, &out, &errb); code != 2 {
		t.Errorf("bad flag: exit %d", code)
	}
	env := map[string]string{"FLASHGATE_REPLICAS": "many"}
	errb.Reset()
	if code := run(context.Background(), []string{"serve"}, func(k string) string { return env[k] }, &out, &errb); code != 2 ||
		!strings.Contains(errb.String(), "FLASHGATE_REPLICAS") {
		t.Errorf("bad env: exit %d, %s", code, errb.String())
	}
}

func TestServeAndAuditInProcess(t *testing.T) {
	data := t.TempDir()
	srv := serveInProcess(t, func(k string) string {
		if k == "FLASHGATE_DATA" {
			return data
		}
		return ""
	}, "--http", "127.0.0.1:0")
	url := srv.url
	var errb bytes.Buffer
	code, s, err := call(t, "POST", url+"/api/v1/session", "", nil, nil)
	if err != nil || code != 201 {
		t.Fatal(code, err)
	}
	// The demo sale asks for the human check: without it, no token.
	code, tk, err := call(t, "POST", url+"/api/v1/sales/demo/tokens", s["session"].(string), nil, nil)
	if err != nil || code != 403 || tk["error"] != "challenge_required" {
		t.Fatalf("demo token without a solution: %d %v %v", code, tk, err)
	}
	code, pz, err := call(t, "POST", url+"/api/v1/sales/demo/challenge", s["session"].(string), nil, nil)
	if err != nil || code != 201 || pz["kind"] != "pow" || pz["difficulty"] != float64(challenge.DefaultDifficulty) {
		t.Fatalf("demo challenge: %d %v %v", code, pz, err)
	}
	solution, err := challenge.Solve(context.Background(), pz["challenge"].(string), challenge.DefaultDifficulty)
	if err != nil {
		t.Fatal(err)
	}
	code, tk, err = call(t, "POST", url+"/api/v1/sales/demo/tokens", s["session"].(string), map[string]string{"X-Challenge-Solution": solution}, nil)
	if err != nil || code != 201 {
		t.Fatalf("demo token: %d %v %v", code, tk, err)
	}
	code, p, err := call(t, "POST", url+"/api/v1/sales/demo/purchases", s["session"].(string), map[string]string{"X-Purchase-Token": tk["token"].(string)}, nil)
	if err != nil || code != 202 {
		t.Fatalf("demo purchase: %d %v %v", code, p, err)
	}
	var sout bytes.Buffer
	if code := run(context.Background(), []string{"sale", "list", "--url", url, "--data", data}, func(string) string { return "" }, &sout, &errb); code != 0 ||
		!strings.Contains(sout.String(), `"id": "demo"`) {
		t.Fatalf("sale list: exit %d: %s %s", code, sout.String(), errb.String())
	}
	// The audit refuses a running installation's data directory.
	if code := run(context.Background(), []string{"audit", "--data", data}, func(string) string { return "" }, &sout, &errb); code == 0 {
		t.Fatal("audit ran on a data directory in use")
	}
	srv.Stop(t)
	sout.Reset()
	if code := run(context.Background(), []string{"audit", "--data", data}, func(string) string { return "" }, &sout, &errb); code != 0 {
		t.Fatalf("audit exit %d:\n%s\n%s", code, sout.String(), errb.String())
	}
	if !strings.Contains(sout.String(), "result: PASS") || !strings.Contains(sout.String(), "1 sold <= stock 100") {
		t.Fatalf("audit report:\n%s", sout.String())
	}
}

// TestAdminTokenFromAFile: --admin-token-file keeps the token off the
// command line, and the admin API takes it.
func TestAdminTokenFromAFile(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(tokenFile, []byte("fga_from_a_file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := serveInProcess(t, func(string) string { return "" },
		"--http", "127.0.0.1:0", "--data", t.TempDir(), "--demo=false", "--admin-token-file", tokenFile)
	url := srv.url
	if code, _, err := call(t, "GET", url+"/api/v1/admin/sales", "fga_from_a_file", nil, nil); err != nil || code != 200 {
		t.Errorf("admin API with the file's token: %d %v", code, err)
	}
	if code, _, _ := call(t, "GET", url+"/api/v1/admin/sales", "something-else", nil, nil); code != 401 {
		t.Errorf("admin API with another token: %d", code)
	}
	srv.Stop(t)
}

// inProcess is `flashgate serve` run in this process by run().
type inProcess struct {
	url    string
	stop   context.CancelFunc
	done   chan int
	stderr *bytes.Buffer
}

// serveInProcess runs serve with args and getenv until the test stops it,
// and returns once it printed its URL.
func serveInProcess(t *testing.T, getenv func(string) string, args ...string) *inProcess {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	p := &inProcess{stop: cancel, done: make(chan int, 1), stderr: &bytes.Buffer{}}
	go func() {
		p.done <- run(ctx, append([]string{"serve"}, args...), getenv, pw, &syncWriter{w: p.stderr})
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), "flashgate is serving on "); ok {
			p.url = u
			break
		}
	}
	go io.Copy(io.Discard, pr)
	if p.url == "" {
		cancel()
		t.Fatalf("no URL printed; stderr: %s", p.stderr.String())
	}
	return p
}

// Stop stops serve and checks it exited 0.
func (p *inProcess) Stop(t *testing.T) {
	t.Helper()
	p.stop()
	if c := <-p.done; c != 0 {
		t.Fatalf("serve exit %d: %s", c, p.stderr.String())
	}
}

// serveForCLI serves on a fresh data directory (no demo sale) until the test
// ends, and returns a runner of CLI commands against it (--url and --data
// added): exit code, standard output, standard error.
func serveForCLI(t *testing.T) (*inProcess, func(args ...string) (int, string, string)) {
	t.Helper()
	data := t.TempDir()
	srv := serveInProcess(t, func(string) string { return "" }, "--data", data, "--http", "127.0.0.1:0", "--demo=false")
	t.Cleanup(func() { srv.Stop(t) })
	return srv, func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(context.Background(), append(args, "--url", srv.url, "--data", data), func(string) string { return "" }, &out, &errb)
		return code, out.String(), errb.String()
	}
}
