package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeProviderRun is a `flashgate provider fake` running in the test.
type fakeProviderRun struct {
	base  string       // http://127.0.0.1:PORT
	lines chan string  // the rest of its standard output
	done  chan error   // what providerCmd returned
	stop  func() error // cancels its context and waits for it to return
}

// startFakeProvider runs providerCmd with args after "fake" until the test
// ends, and reads its URL from the first line it prints.
func startFakeProvider(t *testing.T, getenv func(string) string, args ...string) *fakeProviderRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	var stderr bytes.Buffer
	errw := &syncWriter{w: &stderr} // the server logs to it meanwhile
	r := &fakeProviderRun{lines: make(chan string, 16), done: make(chan error, 1)}
	go func() {
		err := providerCmd(ctx, append([]string{"fake"}, args...), getenv, pw, errw)
		pw.Close()
		r.done <- err
	}()
	go func() {
		defer close(r.lines)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			r.lines <- sc.Text()
		}
	}()
	var once sync.Once
	var stopped error
	r.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case stopped = <-r.done:
			case <-time.After(10 * time.Second):
				stopped = errors.New("providerCmd did not return 10s after its context was cancelled")
			}
		})
		return stopped
	}
	t.Cleanup(func() { _ = r.stop() })

	select {
	case line, ok := <-r.lines:
		const prefix = "fake provider listening on "
		if !ok || !strings.HasPrefix(line, prefix) {
			errw.mu.Lock()
			defer errw.mu.Unlock()
			t.Fatalf("first line %q (ok %v); stderr %s", line, ok, stderr.String())
		}
		r.base, _, _ = strings.Cut(strings.TrimPrefix(line, prefix), " ")
		if want := "(token URL " + r.base + "/oauth/token, orders " + r.base + "/v1/orders)"; !strings.HasSuffix(line, want) {
			t.Fatalf("line %q does not end %q", line, want)
		}
	case err := <-r.done:
		t.Fatalf("providerCmd returned %v before listening", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no URL printed in 10s")
	}
	return r
}

// fakeProviderToken asks base for a token as id:secret (HTTP Basic) and
// returns the status and decoded body.
func fakeProviderToken(t *testing.T, base, id, secret string, form url.Values) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest("POST", base+"/oauth/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	return fakeProviderDo(t, req)
}

func fakeProviderDo(t *testing.T, req *http.Request) (int, map[string]any) {
	t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(res.Body).Decode(&m); err != nil {
		t.Fatalf("%s %s: %d: %v", req.Method, req.URL, res.StatusCode, err)
	}
	return res.StatusCode, m
}

func TestProviderFakeCommand(t *testing.T) {
	env := envOf(map[string]string{"FLASHGATE_PROVIDER_CLIENT_SECRET": "from-env", "FLASHGATE_BAN_PENALTY": "1m"})
	r := startFakeProvider(t, env, "--listen", "127.0.0.1:0", "--client-id", "shop", "--scopes", "orders:write, orders:read",
		"--access-ttl", "90s", "--quota-rate", "1", "--quota-window", "2s")
	grant := url.Values{"grant_type": {"client_credentials"}, "scope": {"orders:write"}}

	if code, m := fakeProviderToken(t, r.base, "shop", "nope", grant); code != 401 || m["error"] != "invalid_client" {
		t.Fatalf("a wrong secret: %d %v", code, m)
	}
	code, m := fakeProviderToken(t, r.base, "shop", "from-env", grant)
	if code != 200 || m["expires_in"] != 90.0 || m["scope"] != "orders:write" || m["token_type"] != "Bearer" {
		t.Fatalf("token: %d %v", code, m)
	}
	token, _ := m["access_token"].(string)

	req, _ := http.NewRequest("POST", r.base+"/v1/orders", strings.NewReader(`{"orderId":"o-1","sale":"demo","shopper":"u1","units":1,"tokenId":"t1"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Idempotency-Key", "o-1")
	if code, m := fakeProviderDo(t, req); code != 201 || m["reference"] != "P-000001" {
		t.Fatalf("order: %d %v", code, m)
	}

	// --quota-rate 1 over --quota-window 2s: the third token request in 2 s is banned
	// for the penalty FLASHGATE_BAN_PENALTY set.
	code, m = fakeProviderToken(t, r.base, "shop", "from-env", grant)
	if code != 403 || m["error"] != "banned" {
		t.Fatalf("over the quota: %d %v", code, m)
	}
	req, _ = http.NewRequest("GET", r.base+"/_fake/stats", nil)
	if code, m := fakeProviderDo(t, req); code != 200 || m["bans"] != 1.0 || m["quota"] != 2.0 || m["ordersAccepted"] != 1.0 || m["bannedUntil"] == nil {
		t.Fatalf("stats: %d %v", code, m)
	}
	res, err := http.Post(r.base+"/oauth/token", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if ra, err := strconv.Atoi(res.Header.Get("Retry-After")); res.StatusCode != 403 || err != nil || ra < 1 || ra > 60 {
		t.Fatalf("during the ban: %d Retry-After %q", res.StatusCode, res.Header.Get("Retry-After"))
	}

	if err := r.stop(); err != nil {
		t.Fatalf("stopping: %v", err)
	}
	if _, err := http.Get(r.base + "/_fake/stats"); err == nil {
		t.Fatal("still serving after its context ended")
	}
}

func TestProviderFakeSecret(t *testing.T) {
	t.Run("generated and printed", func(t *testing.T) {
		r := startFakeProvider(t, noEnv, "--listen", "127.0.0.1:0")
		line := <-r.lines
		_, rest, ok := strings.Cut(line, "generated client secret ")
		secret, _, _ := strings.Cut(rest, " ")
		if !ok || len(secret) < 16 || !strings.Contains(line, "client id flashgate") {
			t.Fatalf("secret line %q", line)
		}
		grant := url.Values{"grant_type": {"client_credentials"}}
		if code, m := fakeProviderToken(t, r.base, "flashgate", secret, grant); code != 200 {
			t.Fatalf("token with the printed secret: %d %v", code, m)
		}
	})
	t.Run("file", func(t *testing.T) {
		path := writeFile(t, "secret", "from-file\n")
		env := envOf(map[string]string{"FLASHGATE_PROVIDER_CLIENT_SECRET": "from-env"})
		r := startFakeProvider(t, env, "--listen", "127.0.0.1:0", "--client-secret-file", path)
		grant := url.Values{"grant_type": {"client_credentials"}}
		if code, m := fakeProviderToken(t, r.base, "flashgate", "from-file", grant); code != 200 {
			t.Fatalf("token with the file's secret: %d %v", code, m)
		}
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
		if line, ok := <-r.lines; ok {
			t.Fatalf("printed %q with a secret given", line)
		}
	})
}

func TestProviderCommandRefuses(t *testing.T) {
	empty := writeFile(t, "empty", "\n")
	for _, tc := range []struct {
		args  []string
		usage bool   // errUsage (printed to stderr)
		want  string // else the error says this
	}{
		{nil, true, ""},
		{[]string{"real"}, true, ""},
		{[]string{"fake", "--nope"}, true, ""},
		{[]string{"fake", "--quota-rate", "fast"}, true, ""},
		{[]string{"fake", "--listen", "127.0.0.1:0", "extra"}, false, "unexpected argument"},
		{[]string{"fake", "--listen", "127.0.0.1:notaport"}, false, "notaport"},
		{[]string{"fake", "--listen", "127.0.0.1:0", "--quota-rate", "-1"}, false, "Rate"},
		{[]string{"fake", "--listen", "127.0.0.1:0", "--fail-share", "1.5"}, false, "FailShare"},
		{[]string{"fake", "--listen", "127.0.0.1:0", "--quota-window", "10ms"}, false, "Window"},
		{[]string{"fake", "--listen", "127.0.0.1:0", "--client-id", ""}, false, "ClientID"},
		{[]string{"fake", "--listen", "127.0.0.1:0", "--client-secret-file", empty}, false, "empty"},
		{[]string{"fake", "--listen", "127.0.0.1:0", "--client-secret-file", empty + ".missing"}, false, "client-secret-file"},
	} {
		var out, errs bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := providerCmd(ctx, tc.args, noEnv, &out, &errs)
		cancel()
		switch {
		case tc.usage && (err != errUsage || errs.Len() == 0):
			t.Errorf("%q: %v, stderr %q; want usage", tc.args, err, errs.String())
		case !tc.usage && (err == nil || err == errUsage || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: %v; want an error saying %q", tc.args, err, tc.want)
		}
		if strings.Contains(out.String(), "listening") {
			t.Errorf("%q: printed %q", tc.args, out.String())
		}
	}
}
