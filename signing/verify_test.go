package signing_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashgate/flashgate/signing"
)

// sentinels are the reasons Verify gives; every error matches exactly one.
var sentinels = []error{
	signing.ErrMissing, signing.ErrMalformed, signing.ErrUnknownKey, signing.ErrBadSignature,
	signing.ErrStale, signing.ErrReplayed, signing.ErrUnavailable,
}

// checkReason fails unless err matches want and no other reason.
func checkReason(t *testing.T, err, want error) {
	t.Helper()
	for _, s := range sentinels {
		if got := errors.Is(err, s); got != (s == want) {
			t.Fatalf("err = %v; errors.Is(err, %q) = %v, want only %q", err, s, got, want)
		}
	}
}

func TestVerifyMissing(t *testing.T) {
	once := newMemOnce()
	r := goldenRequest()
	r.header = ""
	kid, err := verify(newVerifier(once), r)
	checkReason(t, err, signing.ErrMissing)
	if kid != "" || once.Calls() != 0 {
		t.Fatalf("kid %q, Once called %d times", kid, once.Calls())
	}
}

func TestVerifyMalformed(t *testing.T) {
	for _, tc := range malformedHeaders {
		if tc.h == "" {
			continue // ErrMissing
		}
		t.Run(tc.name, func(t *testing.T) {
			once := newMemOnce()
			r := goldenRequest()
			r.header = tc.h
			kid, err := verify(newVerifier(once), r)
			checkReason(t, err, signing.ErrMalformed)
			if kid != "" || once.Calls() != 0 {
				t.Fatalf("kid %q, Once called %d times", kid, once.Calls())
			}
		})
	}
}

func TestVerifyUnknownKey(t *testing.T) {
	for name, keys := range map[string]signing.Keys{
		"other id":     {"app-android-1": []byte(goldenSecret)},
		"no keys":      nil,
		"empty secret": {goldenKeyID: {}},
	} {
		t.Run(name, func(t *testing.T) {
			once := newMemOnce()
			v := newVerifier(once)
			v.Keys = keys
			_, err := verify(v, goldenRequest())
			checkReason(t, err, signing.ErrUnknownKey)
			if once.Calls() != 0 {
				t.Fatal("Once consulted")
			}
		})
	}
}

func TestVerifyWindow(t *testing.T) {
	for _, tc := range []struct {
		name   string
		window time.Duration // 0: default
		now    time.Time     // the server's clock; the request is signed at t0
		ok     bool
	}{
		{"on time", 0, t0, true},
		{"ts 30 s old, at the edge", 0, t0.Add(30 * time.Second), true},
		{"ts 30 s ahead, at the edge", 0, t0.Add(-30 * time.Second), true},
		{"ts 30.5 s ahead", 0, t0.Add(-30*time.Second - 500*time.Millisecond), false},
		{"ts 30 s and 1 ns old", 0, t0.Add(30*time.Second + 1), false},
		{"stale in the past, 31 s", 0, t0.Add(31 * time.Second), false},
		{"stale in the future, 31 s", 0, t0.Add(-31 * time.Second), false},
		{"stale in the past, a day", 0, t0.Add(24 * time.Hour), false},
		{"stale in the future, a year", 0, t0.Add(-365 * 24 * time.Hour), false},
		{"server clock at zero", 0, time.Unix(0, 0), false},
		{"window 5 s, edge", 5 * time.Second, t0.Add(5 * time.Second), true},
		{"window 5 s, 6 s old", 5 * time.Second, t0.Add(6 * time.Second), false},
		{"window 5 s, 6 s ahead", 5 * time.Second, t0.Add(-6 * time.Second), false},
		{"negative window is the default", -time.Second, t0.Add(30 * time.Second), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			once := newMemOnce()
			v := newVerifier(once)
			v.Window, v.Now = tc.window, clockAt(tc.now)
			kid, err := verify(v, goldenRequest())
			if tc.ok {
				if err != nil || kid != goldenKeyID {
					t.Fatalf("Verify = %q, %v; want accepted", kid, err)
				}
				return
			}
			checkReason(t, err, signing.ErrStale)
			if want := fmt.Sprintf("server time %d", tc.now.Unix()); !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not carry %q", err, want)
			}
			if once.Calls() != 0 {
				t.Fatal("Once consulted")
			}
		})
	}
}

func TestVerifyExtremeTimestamps(t *testing.T) {
	// A ts far from now must not overflow into the window.
	for _, ts := range []int64{0, 1, 999999999999} {
		for _, now := range []time.Time{t0, time.Unix(0, 0), time.Unix(1<<62, 0), time.Unix(-1<<62, 0)} {
			v := newVerifier(newMemOnce())
			v.Now = clockAt(now)
			h := signing.Sign(goldenKeyID, []byte(goldenSecret), "GET", "/", nil, noBound, time.Unix(ts, 0), goldenNonce)
			_, err := v.Verify(context.Background(), "GET", "/", nil, noBound, h)
			near := now.Unix() >= 0 && now.Unix() <= 30 && ts <= 30
			if near && err != nil || !near && !errors.Is(err, signing.ErrStale) {
				t.Errorf("ts %d, now %d: %v", ts, now.Unix(), err)
			}
		}
	}
}

func TestVerifyBadSignature(t *testing.T) {
	golden := goldenParams(t)
	withParams := func(f func(*signing.Params)) string {
		p := golden
		f(&p)
		return p.String()
	}
	for _, tc := range []struct {
		name string
		r    func(*request)
		keys signing.Keys // nil: the golden key only
	}{
		{"method", func(r *request) { r.method = "PUT" }, nil},
		{"path", func(r *request) { r.path = "/api/v1/sales/other/tokens?qty=2" }, nil},
		{"path encoding", func(r *request) { r.path = "/api/v1/sales/%64emo/tokens?qty=2" }, nil},
		{"query value", func(r *request) { r.path = "/api/v1/sales/demo/tokens?qty=3" }, nil},
		{"query dropped", func(r *request) { r.path = "/api/v1/sales/demo/tokens" }, nil},
		{"query added", func(r *request) { r.path = goldenPath + "&x=1" }, nil},
		{"body", func(r *request) { r.body = []byte(`{"sale":"demO"}`) }, nil},
		{"body dropped", func(r *request) { r.body = nil }, nil},
		{"body trailing newline", func(r *request) { r.body = append(r.body, '\n') }, nil},
		{"session added", func(r *request) { r.bound = signing.Bound("Bearer s", "", "") }, nil},
		{"purchase token added", func(r *request) { r.bound = signing.Bound("", "t", "") }, nil},
		{"solution added", func(r *request) { r.bound = signing.Bound("", "", "x") }, nil},
		{"bound hash zero", func(r *request) { r.bound = [32]byte{} }, nil},
		{"ts", func(r *request) { r.header = withParams(func(p *signing.Params) { p.Timestamp++ }) }, nil},
		{"nonce", func(r *request) {
			r.header = withParams(func(p *signing.Params) { p.Nonce = "mZ3xq9L0bR2sT4uV6wY8zB" })
		}, nil},
		{"key id, same secret", func(r *request) { r.header = withParams(func(p *signing.Params) { p.KeyID = "app-ios-2" }) },
			signing.Keys{goldenKeyID: []byte(goldenSecret), "app-ios-2": []byte(goldenSecret)}},
		{"key id, other secret", func(r *request) { r.header = withParams(func(p *signing.Params) { p.KeyID = "app-ios-2" }) },
			signing.Keys{goldenKeyID: []byte(goldenSecret), "app-ios-2": []byte(strings.Repeat("s", 64))}},
		{"secret", func(*request) {}, signing.Keys{goldenKeyID: []byte(strings.ToUpper(goldenSecret))}},
		{"sig last bit", func(r *request) { r.header = withParams(func(p *signing.Params) { p.Sig[31] ^= 1 }) }, nil},
		{"sig zero", func(r *request) { r.header = withParams(func(p *signing.Params) { p.Sig = [32]byte{} }) }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			once := newMemOnce()
			v := newVerifier(once)
			if tc.keys != nil {
				v.Keys = tc.keys
			}
			r := goldenRequest()
			tc.r(&r)
			kid, err := verify(v, r)
			checkReason(t, err, signing.ErrBadSignature)
			if kid != "" || once.Calls() != 0 {
				t.Fatalf("kid %q, Once called %d times", kid, once.Calls())
			}
		})
	}
}

// TestVerifyBindsHeaders: a signature made for one session, purchase token
// or challenge solution is refused with another, before its nonce is used,
// so a captured request cannot be spent by another session, and one device
// cannot sign for purchases with other tokens.
func TestVerifyBindsHeaders(t *testing.T) {
	const (
		sessionA, sessionB = "Bearer session-a", "Bearer session-b"
		tokenT1, tokenT2   = "token-t1", "token-t2"
		solS1, solS2       = "1767225600.abc.17", "1767225600.abc.18"
	)
	for _, tc := range []struct {
		name       string
		path       string
		signedWith [3]string // Authorization, X-Purchase-Token, X-Challenge-Solution
		sentWith   [3]string
	}{
		{"token request, session A sent with B", "/api/v1/sales/demo/tokens", [3]string{sessionA, "", ""}, [3]string{sessionB, "", ""}},
		{"token request, session dropped", "/api/v1/sales/demo/tokens", [3]string{sessionA, "", ""}, [3]string{"", "", ""}},
		{"token request, session in other case", "/api/v1/sales/demo/tokens", [3]string{sessionA, "", ""}, [3]string{"bearer session-a", "", ""}},
		{"purchase, token T1 sent with T2", "/api/v1/sales/demo/purchases", [3]string{sessionA, tokenT1, ""}, [3]string{sessionA, tokenT2, ""}},
		{"purchase, token dropped", "/api/v1/sales/demo/purchases", [3]string{sessionA, tokenT1, ""}, [3]string{sessionA, "", ""}},
		{"purchase, session A sent with B", "/api/v1/sales/demo/purchases", [3]string{sessionA, tokenT1, ""}, [3]string{sessionB, tokenT1, ""}},
		{"purchase, token moved to the solution", "/api/v1/sales/demo/purchases", [3]string{sessionA, tokenT1, ""}, [3]string{sessionA, "", tokenT1}},
		{"token request, solution S1 sent with S2", "/api/v1/sales/demo/tokens", [3]string{sessionA, "", solS1}, [3]string{sessionA, "", solS2}},
		{"token request, solution added", "/api/v1/sales/demo/tokens", [3]string{sessionA, "", ""}, [3]string{sessionA, "", solS1}},
		{"token request, solution and session swapped", "/api/v1/sales/demo/tokens", [3]string{sessionA, "", solS1}, [3]string{sessionB, "", solS2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			once := newMemOnce()
			v := newVerifier(once)
			signed := signing.Bound(tc.signedWith[0], tc.signedWith[1], tc.signedWith[2])
			h := signing.Sign(goldenKeyID, []byte(goldenSecret), "POST", tc.path, nil, signed, t0, goldenNonce)

			sent := http.Header{}
			for i, name := range []string{"Authorization", "X-Purchase-Token", "X-Challenge-Solution"} {
				if tc.sentWith[i] != "" {
					sent.Set(name, tc.sentWith[i])
				}
			}
			kid, err := v.Verify(context.Background(), "POST", tc.path, nil, signing.BoundOf(sent), h)
			checkReason(t, err, signing.ErrBadSignature)
			if kid != "" || once.Calls() != 0 {
				t.Fatalf("kid %q, Once called %d times", kid, once.Calls())
			}

			// The nonce is still unused: the request as signed passes.
			if _, err := v.Verify(context.Background(), "POST", tc.path, nil, signed, h); err != nil {
				t.Fatalf("as signed: %v", err)
			}
		})
	}
}

func TestVerifyReplayed(t *testing.T) {
	once := newMemOnce()
	v := newVerifier(once)
	if _, err := verify(v, goldenRequest()); err != nil {
		t.Fatal(err)
	}
	kid, err := verify(v, goldenRequest())
	checkReason(t, err, signing.ErrReplayed)
	if kid != "" {
		t.Fatalf("kid %q with the error", kid)
	}
	if !once.used["sig."+goldenKeyID+"."+goldenNonce] || len(once.used) != 1 {
		t.Fatalf("Once keys %v, want only sig.%s.%s", once.used, goldenKeyID, goldenNonce)
	}

	// A different request with the same nonce is a replay too, even signed
	// a second later.
	h := signing.Sign(goldenKeyID, []byte(goldenSecret), "GET", "/other", nil, noBound, t0.Add(time.Second), goldenNonce)
	_, err = v.Verify(context.Background(), "GET", "/other", nil, noBound, h)
	checkReason(t, err, signing.ErrReplayed)

	// The same nonce under another key id is another key's business.
	v.Keys["app-android-1"] = []byte(strings.Repeat("a", 32))
	h = signing.Sign("app-android-1", v.Keys["app-android-1"], goldenMethod, goldenPath, []byte(goldenBody), noBound, t0, goldenNonce)
	if _, err := v.Verify(context.Background(), goldenMethod, goldenPath, []byte(goldenBody), noBound, h); err != nil {
		t.Fatalf("same nonce, other key id: %v", err)
	}
}

func TestVerifyReplayAcrossProcesses(t *testing.T) {
	shared := newMemOnce() // the KV bucket both processes use
	a, b := newVerifier(shared), newVerifier(shared)
	b.Now = clockAt(t0.Add(2 * time.Second)) // another machine's clock
	if _, err := verify(a, goldenRequest()); err != nil {
		t.Fatal(err)
	}
	_, err := verify(b, goldenRequest())
	checkReason(t, err, signing.ErrReplayed)

	// And at the same time: exactly one of many racing copies gets through.
	shared = newMemOnce()
	vs := []*signing.Verifier{newVerifier(shared), newVerifier(shared), newVerifier(shared)}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		accepted int
	)
	for i := range 30 {
		wg.Go(func() {
			_, err := verify(vs[i%len(vs)], goldenRequest())
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				accepted++
			case !errors.Is(err, signing.ErrReplayed):
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if accepted != 1 {
		t.Fatalf("%d copies accepted, want 1", accepted)
	}
}

func TestVerifyUnavailable(t *testing.T) {
	down := errors.New("nats: timeout")
	kid, err := verify(newVerifier(errOnce{down}), goldenRequest())
	checkReason(t, err, signing.ErrUnavailable)
	if !errors.Is(err, down) {
		t.Fatalf("err = %v, does not wrap the store's error", err)
	}
	if kid != "" {
		t.Fatalf("kid %q with the error", kid)
	}

	kid, err = verify(newVerifier(nil), goldenRequest())
	checkReason(t, err, signing.ErrUnavailable)
	if kid != "" {
		t.Fatalf("kid %q with the error", kid)
	}
}

func TestVerifyPassesContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	v := newVerifier(ctxOnce{})
	_, err := v.Verify(ctx, goldenMethod, goldenPath, []byte(goldenBody), noBound, goldenHeader)
	checkReason(t, err, signing.ErrUnavailable)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want it to wrap context.Canceled", err)
	}
}

// ctxOnce fails when its context is done.
type ctxOnce struct{}

func (ctxOnce) Use(ctx context.Context, _ string) (bool, error) { return ctx.Err() == nil, ctx.Err() }

func TestForgeriesDoNotReachOnce(t *testing.T) {
	// A flood of forged requests for a known key id, on time, with fresh
	// nonces: none may cost a write to the nonce store.
	once := newMemOnce()
	v := newVerifier(once)
	var sig [32]byte
	for range 10000 {
		rand.Read(sig[:])
		h := fmt.Sprintf("keyId=%s,ts=%d,nonce=%s,sig=%s", goldenKeyID, goldenTS, signing.NewNonce(), hex.EncodeToString(sig[:]))
		_, err := v.Verify(context.Background(), goldenMethod, goldenPath, []byte(goldenBody), noBound, h)
		if !errors.Is(err, signing.ErrBadSignature) {
			t.Fatalf("forged %s: %v", h, err)
		}
	}
	if once.Calls() != 0 {
		t.Fatalf("Once consulted %d times", once.Calls())
	}
}
