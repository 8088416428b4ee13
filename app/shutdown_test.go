package app_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flashgate/flashgate/app"
	"github.com/golang-jwt/jwt/v5"
)

// TestShutdownAnswersInFlightRequests: requests in flight when the service
// is told to stop get an answer, and every success they got is kept.
func TestShutdownAnswersInFlightRequests(t *testing.T) {
	dir := t.TempDir()
	a := startApp(t, app.Config{Data: dir})
	c := newClient(t, a)
	c.createSale(a.AdminToken, map[string]any{"id": "s", "stock": 1000})
	const n = 200
	sessions := make([]string, n)
	for i := range sessions {
		_, sessions[i] = c.session()
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	type out struct {
		status int
		token  string
		err    error
	}
	res := make([]out, n)
	start := make(chan struct{})
	first := make(chan struct{}, n)
	var wg sync.WaitGroup
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			req, _ := http.NewRequest("POST", a.URL+"/api/v1/sales/s/tokens", nil)
			req.Header.Set("Authorization", "Bearer "+sessions[i])
			resp, err := hc.Do(req)
			if err != nil {
				res[i].err = err
				first <- struct{}{}
				return
			}
			defer resp.Body.Close()
			res[i].status = resp.StatusCode
			if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "" {
				res[i].err = errors.New("503 without Retry-After")
			}
			if resp.StatusCode == http.StatusCreated {
				res[i].token = "yes"
			}
			first <- struct{}{}
		}()
	}
	close(start)
	<-first // the first answer: the others are in flight or about to connect
	if err := a.Shutdown(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	wg.Wait()
	answered, refused, ok, busy := 0, 0, 0, 0
	for i, r := range res {
		switch {
		case r.err != nil && errors.Is(r.err, syscall.ECONNREFUSED):
			refused++ // never reached the server: it had stopped listening
		case r.err != nil:
			t.Errorf("request %d lost its answer: %v", i, r.err)
		default:
			answered++
			switch r.status {
			case http.StatusCreated:
				ok++
			case http.StatusServiceUnavailable:
				busy++
			default:
				t.Errorf("request %d: status %d", i, r.status)
			}
		}
	}
	t.Logf("%d answered (%d tokens, %d told to retry), %d refused at connect", answered, ok, busy, refused)
	// Every token given is still there after a restart.
	b := startApp(t, app.Config{Data: dir})
	c = newClient(t, b)
	for i, r := range res {
		if r.token == "" {
			continue
		}
		again := c.do("POST", "/api/v1/sales/s/tokens", sessions[i], nil, nil)
		if again.Status != http.StatusOK || again.str("status") != "already_issued" {
			t.Errorf("token of request %d not kept: %d %s", i, again.Status, again.Raw)
		}
	}
	runAudit(t, b)
}

// TestExternalIdentity: shoppers sign in with the shop's identity provider.
func TestExternalIdentity(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(pub)
	keyFile := filepath.Join(t.TempDir(), "idp.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startApp(t, app.Config{IdentityKey: keyFile, IdentityIssuer: "https://shop.example", IdentityAudience: "flashgate"})
	c := newClient(t, a)
	c.createSale(a.AdminToken, map[string]any{"id": "s", "stock": 5})
	sign := func(sub, iss string, key ed25519.PrivateKey) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
			"sub": sub, "iss": iss, "aud": "flashgate", "exp": time.Now().Add(time.Hour).Unix(),
		}).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good := sign("customer-42", "https://shop.example", priv)
	r := c.do("POST", "/api/v1/sales/s/tokens", good, nil, nil)
	if r.Status != http.StatusCreated {
		t.Fatalf("token with a shop JWT: %d %s", r.Status, r.Raw)
	}
	p := c.do("POST", "/api/v1/sales/s/purchases", good, map[string]string{"X-Purchase-Token": r.str("token")}, nil)
	if p.Status != http.StatusAccepted {
		t.Fatalf("purchase: %d %s", p.Status, p.Raw)
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	for name, tok := range map[string]string{
		"wrong issuer": sign("customer-42", "https://evil.example", priv),
		"wrong key":    sign("customer-42", "https://shop.example", other),
	} {
		if r := c.do("POST", "/api/v1/sales/s/tokens", tok, nil, nil); r.Status != http.StatusUnauthorized {
			t.Errorf("%s: %d %s", name, r.Status, r.Raw)
		}
	}
	if r := c.do("POST", "/api/v1/session", "", nil, nil); r.Status != http.StatusForbidden || !strings.Contains(r.str("error"), "disabled") {
		t.Errorf("anonymous session in external mode: %d %s", r.Status, r.Raw)
	}
}
