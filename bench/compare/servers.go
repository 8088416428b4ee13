package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/flashgate/flashgate/bench/internal/redisproc"
)

// measure starts srv on a fresh directory, runs the load generator against
// it once and stops it.
func measure(ctx context.Context, c config, srv string, n int, shoppers int64) Run {
	r := Run{Server: srv, N: n, BusyBefore: machineBusy(500 * time.Millisecond)}
	dir, err := os.MkdirTemp("", "flashgate-compare-")
	if err != nil {
		r.Failed = err.Error()
		return r
	}
	defer os.RemoveAll(dir)
	s, err := start(ctx, c, srv, dir)
	if err != nil {
		r.Failed = "start " + srv + ": " + err.Error()
		return r
	}
	g, wrong, err := generate(ctx, c, srv, s, dir, shoppers)
	s.stop()
	r.ServerLog = s.log()
	r.Result, r.VerdictWrong = g, wrong
	if err != nil {
		r.Failed = err.Error()
		if !wrong {
			r.Result = nil
		}
	}
	return r
}

// running is a started server: its processes (stopped last first) and
// where to reach it.
type running struct {
	URL        string
	AdminToken string
	procs      []*proc
	redis      *redisproc.Server
}

// pids are the server's processes, the reference server's and redis's
// both for the Redis-Lua reference.
func (s *running) pids() []string {
	var out []string
	for _, p := range s.procs {
		out = append(out, strconv.Itoa(p.cmd.Process.Pid))
	}
	if pid := s.redis.PID(); pid > 0 {
		out = append(out, strconv.Itoa(pid))
	}
	return out
}

// log is the end of the servers' standard error, at most 20 lines.
func (s *running) log() string {
	var out []string
	for _, p := range s.procs {
		b, err := os.ReadFile(p.stderr)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				out = append(out, l)
			}
		}
	}
	if len(out) > 20 {
		out = append([]string{fmt.Sprintf("(%d lines before)", len(out)-20)}, out[len(out)-20:]...)
	}
	return strings.Join(out, "\n")
}

func (s *running) stop() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		s.procs[i].stop()
	}
	s.redis.Stop()
}

// start starts srv in dir and waits until it serves.
func start(ctx context.Context, c config, srv, dir string) (*running, error) {
	s := &running{}
	switch srv {
	case Flashgate:
		data := filepath.Join(dir, "data")
		p, url, err := startProc(ctx, "flashgate", c.Flashgate, dir, "serve", "--data", data, "--http", "127.0.0.1:0",
			"--demo=false", "--session-rate=-1", "--rate-limit=off", "--log-level", "warn", "--heap-floor", c.HeapFloor)
		if err != nil {
			return nil, err
		}
		s.procs, s.URL = append(s.procs, p), url
		b, err := os.ReadFile(filepath.Join(data, "admin-token"))
		if err != nil {
			s.stop()
			return nil, fmt.Errorf("admin token: %w", err)
		}
		s.AdminToken = strings.TrimSpace(string(b))
	case Redis:
		rs, err := redisproc.Start(ctx, redisproc.Options{Bin: c.RedisServer, Dir: filepath.Join(dir, "redis")})
		if err != nil {
			return nil, err
		}
		s.redis, s.AdminToken = rs, randomHex(16)
		p, url, err := startProc(ctx, "refserver-redis", c.Refserver, dir, "-mode", "redis", "-http", "127.0.0.1:0",
			"-redis", rs.Addr, "-admin-token", s.AdminToken, "-pool", strconv.Itoa(max(256, 4*c.VUs)), "-heap-floor", c.HeapFloor)
		if err != nil {
			s.stop()
			return nil, err
		}
		s.procs, s.URL = append(s.procs, p), url
	case Bare:
		p, url, err := startProc(ctx, "refserver-bare", c.Refserver, dir, "-mode", "bare", "-http", "127.0.0.1:0", "-heap-floor", c.HeapFloor)
		if err != nil {
			return nil, err
		}
		s.procs, s.URL, s.AdminToken = append(s.procs, p), url, "unused"
	default:
		return nil, fmt.Errorf("unknown server %q", srv)
	}
	return s, nil
}

// generate runs the load generator against s and reads its JSON result.
// wrong is true when the generator checked the server's figures and found
// an invariant broken; the result is then returned with the error.
func generate(ctx context.Context, c config, srv string, s *running, dir string, shoppers int64) (g *GenResult, wrong bool, err error) {
	out := filepath.Join(dir, "result.json")
	args := []string{"bench", "--url", s.URL, "--admin-token", s.AdminToken, "--scenario", "tokens",
		"--vus", strconv.Itoa(c.VUs), "--duration", c.Duration.String(), "--warmup", c.Warmup.String(),
		"--shoppers", strconv.FormatInt(shoppers, 10), "--json", out, "--quiet", "--server-pid", strings.Join(s.pids(), ",")}
	if srv == Bare {
		args = append(args, "--verdict=false") // its figures are a fixed body
	}
	ctx, cancel := context.WithTimeout(ctx, c.Warmup+c.Duration+2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Generator, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = 10 * time.Second
	var log tailBuffer
	cmd.Stdout, cmd.Stderr = &log, &log
	runErr := cmd.Run()
	if b, rerr := os.ReadFile(out); rerr == nil {
		if g, err = ParseGenResult(b); err != nil {
			return nil, false, err
		}
	}
	switch {
	case g != nil && g.Verdict.Checked && !g.Verdict.OK:
		return g, true, fmt.Errorf("verdict: %s", strings.Join(g.Verdict.Problems, "; "))
	case runErr != nil:
		return nil, false, fmt.Errorf("generator: %v%s", runErr, log.tail())
	case g == nil:
		return nil, false, fmt.Errorf("generator wrote no result to --json%s", log.tail())
	}
	return g, false, nil
}

// proc is a server process.
type proc struct {
	name   string
	cmd    *exec.Cmd
	done   chan error
	stderr string // its stderr, a file
}

var servingRE = regexp.MustCompile(`serving on (https?://\S+)`)

// startProc runs bin with args in dir and waits (up to a minute) for the
// line "... serving on <url>" on its stdout.
func startProc(ctx context.Context, name, bin, dir string, args ...string) (*proc, string, error) {
	p := &proc{name: name, cmd: exec.Command(bin, args...), done: make(chan error, 1), stderr: filepath.Join(dir, name+".stderr")}
	p.cmd.Dir = dir
	errf, err := os.Create(p.stderr)
	if err != nil {
		return nil, "", err
	}
	defer errf.Close() // the child holds its own descriptor
	p.cmd.Stderr = errf
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("%s: %w", name, err)
	}
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		found := false
		for sc.Scan() { // read to the end, so the child never blocks on a full pipe
			if m := servingRE.FindStringSubmatch(sc.Text()); m != nil && !found {
				found = true
				urls <- m[1]
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		p.done <- p.cmd.Wait()
	}()
	select {
	case url := <-urls:
		return p, url, nil
	case err := <-p.done:
		p.done <- err
		return nil, "", fmt.Errorf("%s exited before serving: %v%s", name, err, fileTail(p.stderr))
	case <-time.After(time.Minute):
		p.stop()
		return nil, "", fmt.Errorf("%s did not serve within a minute%s", name, fileTail(p.stderr))
	case <-ctx.Done():
		p.stop()
		return nil, "", ctx.Err()
	}
}

// stop sends SIGTERM and waits up to 30 seconds before killing. Safe to
// call twice.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		err := <-p.done
		p.done <- err
	}
}

// tailBuffer keeps the last 4 KiB written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = append(t.b[:0], t.b[len(t.b)-4096:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) tail() string {
	s := strings.TrimSpace(string(t.b))
	if s == "" {
		return ""
	}
	return "; its output ends:\n" + s
}

func fileTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var t tailBuffer
	_, _ = t.Write(bytes.TrimSpace(b))
	return t.tail()
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(errors.New("crypto/rand failed"))
	}
	return hex.EncodeToString(b)
}
