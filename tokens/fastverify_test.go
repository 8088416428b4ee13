package tokens_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/jwstest"
	"github.com/flashgate/flashgate/tokens"
)

// agreeWithLibrary fails t unless c, err (Verify's answer for token) is
// golang-jwt's, and the fast path took token only if the library takes it,
// with the same claims.
func agreeWithLibrary(t *testing.T, p *tokens.Purchase, token string, c tokens.Claims, err error) bool {
	t.Helper()
	want, werr := tokens.VerifyLib(p, token)
	if fc, ok := tokens.VerifyFast(p, token); ok && (werr != nil || !sameClaims(fc, want)) {
		t.Errorf("fast path took %q as %+v; the library says %+v, %v", token, fc, want, werr)
	}
	if !sameClaims(c, want) || fmt.Sprint(err) != fmt.Sprint(werr) {
		t.Errorf("Verify(%q) = %+v, %v; the library says %+v, %v", token, c, err, want, werr)
	}
	_, ok := tokens.VerifyFast(p, token)
	return ok
}

// purchasePayloads are claim sets around sample() at a clock of t0: right,
// nearly right, and strange JSON.
func purchasePayloads() []string {
	iat, exp := t0.Unix(), t0.Add(2*time.Minute).Unix()
	c := func(rest string) string {
		return fmt.Sprintf(`{"sub":"shopper-1","aud":"flashgate-purchase","sale":"sale-42","jti":"01HZY8W2D3K4M5N6P7Q8R9S0T1","iat":%d,"exp":%d%s}`, iat, exp, rest)
	}
	return []string{
		c(""),
		c(`,"extra":{"a":[true]}`),
		c(`,"sale":"sale-43"`),
		c(`,"jti":""`),
		c(`,"exp":null`),
		c(`,"exp":1.7e9`),
		c(`,"Sale":"sale-44"`),
		c(`,"aud":"flashgate-session"`),
		c(`,"iat":-1`),
		c(`,"exp":1700000000`),
		c(`,"exp":1700000001`),
		c(`,"extra":"` + strings.Repeat("x", 400) + `"`),
		strings.Replace(c(""), "shopper-1", strings.Repeat("s", 300), 1),
		c("") + "\t",
		c("") + "]",
		fmt.Sprintf(`{"sub":"shopper-1","aud":"flashgate-purchase","sale":"sale-42","iat":%d,"exp":%d}`, iat, exp),
		`{}`, `null`, `1`, ``,
	}
}

// Verify's fast path never takes a token golang-jwt refuses nor reads
// other claims from one; Verify gives exactly the library's verdict.
func TestPurchaseFastPathAgreesWithLibrary(t *testing.T) {
	keys := jwstest.Keys(t, testKid, testKey)
	p := tokens.NewPurchase(keys, clockAt(t0))
	good, err := p.Sign(sample())
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := tokens.VerifyFast(p, good); !ok || !sameClaims(c, sample()) {
		t.Fatalf("fast path does not take a token Sign wrote: %+v, %v", c, ok)
	}
	var toks []string
	for _, h := range jwstest.Headers(testKid, "other") {
		for _, pl := range purchasePayloads() {
			toks = append(toks, jwstest.Sign(testKey, h, pl))
		}
	}
	toks = append(toks, jwstest.Mutate(good, 3000, 2)...)
	fast := 0
	for _, tok := range toks {
		c, err := p.Verify(tok)
		if agreeWithLibrary(t, p, tok, c, err) {
			fast++
		}
	}
	if fast < 4 {
		t.Errorf("the fast path took only %d of %d variants", fast, len(toks))
	}
	t.Logf("%d variants, %d taken by the fast path", len(toks), fast)
}

// Any claims, signed under the canonical header (which the fast path
// reads): Verify's verdict is the library's. (FuzzVerify damages whole
// tokens, so it seldom gets past the signature to the claims.)
func FuzzFastPathClaims(f *testing.F) {
	for _, pl := range purchasePayloads() {
		f.Add([]byte(pl))
	}
	p := tokens.NewPurchase(jwstest.Keys(f, testKid, testKey), clockAt(t0))
	header := `{"alg":"HS256","kid":"` + testKid + `","typ":"JWT"}`
	f.Fuzz(func(t *testing.T, payload []byte) {
		tok := jwstest.Sign(testKey, header, string(payload))
		c, err := p.Verify(tok)
		agreeWithLibrary(t, p, tok, c, err)
	})
}

// scanned is a claim set for the ScanClaims tests.
type scanned struct {
	Sub string `json:"sub"`
	Iat int64  `json:"iat"`
	Exp int64  `json:"exp"`
	Aud string `json:"aud"`
}

// scanClaims is ScanClaims for a scanned.
func scanClaims(b []byte, s *scanned) bool {
	return tokens.ScanClaims(b, []tokens.Claim{{Key: "sub", Str: &s.Sub}, {Key: "iat", Int: &s.Iat}, {Key: "exp", Int: &s.Exp}, {Key: "aud", Str: &s.Aud}})
}

// ScanClaims takes a payload only if json.Unmarshal reads the same claims
// from it.
func FuzzScanClaims(f *testing.F) {
	for _, seed := range []string{
		`{"sub":"s-1","iat":17,"exp":2,"aud":"a"}`,
		`{"sub":"","iat":0,"exp":2,"aud":""}`,
		`{"sub":"s","iat":999999999999999999,"exp":2,"aud":"a"}`,
		`{"sub":"s","iat":9999999999999999999,"exp":2,"aud":"a"}`,
		`{"sub":"s","iat":017,"exp":2,"aud":"a"}`,
		`{"sub":"s","iat":-1,"exp":2,"aud":"a"}`,
		`{"sub":"s","iat":1.5,"exp":2,"aud":"a"}`,
		`{"sub":"s","iat":1e3,"exp":2,"aud":"a"}`,
		`{"sub":"s\u0041","iat":1,"exp":2,"aud":"a"}`,
		`{"sub":"s\"","iat":1,"exp":2,"aud":"a"}`,
		"{\"sub\":\"s\xff\",\"iat\":1,\"aud\":\"a\"}",
		"{\"sub\":\"s\t\",\"iat\":1,\"aud\":\"a\"}",
		`{"sub":"s","iat":1,"exp":2,"aud":"a"} `,
		`{"sub":"s","iat":1,"exp":2,"aud":"a",}`,
		`{"sub":"s","iat":1,"exp":2,"aud":"a","x":1}`,
		`{"sub":"s","exp":2,"aud":"a","iat":1}`,
		`{"SUB":"s","iat":1,"exp":2,"aud":"a"}`,
		`{"sub":"s", "iat":1,"exp":2,"aud":"a"}`,
		`{"sub":"s","iat":1}`,
		`{"sub":1,"iat":"1","exp":2,"aud":"a"}`,
		`{"sub":"s","iat":1,"exp":2,"aud":"a"`,
		``, `{}`, `null`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var s scanned
		if !scanClaims(b, &s) {
			return
		}
		var j scanned
		if err := json.Unmarshal(b, &j); err != nil || j != s {
			t.Fatalf("ScanClaims(%q) = %+v; json.Unmarshal gives %+v, %v", b, s, j, err)
		}
	})
}

func TestScanClaimsTakesTheCanonicalForm(t *testing.T) {
	if tokens.ScanClaims([]byte(`{"sub":"s"}`), []tokens.Claim{{Key: "sub"}}) {
		t.Error("ScanClaims took a claim with nowhere to put it")
	}
	want := scanned{Sub: "shopper-1", Iat: 1700000000, Exp: 1700000120, Aud: "flashgate-purchase"}
	b, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var s scanned
	if !scanClaims(b, &s) || s != want {
		t.Fatalf("ScanClaims(%s) = %+v", b, s)
	}
}

// Sign writes the claims as json.Marshal would, for any strings.
func TestSignClaimsAreJSONMarshal(t *testing.T) {
	p := tokens.NewPurchase(jwstest.Keys(t, testKid, testKey), clockAt(t0))
	for _, s := range []string{"shopper-1", `a"b\c`, "<&>", "\u2028é\x01", "\xff"} {
		c := sample()
		c.Shopper, c.Sale = s, s+"x"
		tok, err := p.Sign(c)
		if err != nil {
			t.Fatal(err)
		}
		seg := strings.Split(tok, ".")[1]
		got, err := base64.RawURLEncoding.DecodeString(seg)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(struct {
			Sub  string `json:"sub"`
			Aud  string `json:"aud"`
			Sale string `json:"sale"`
			Jti  string `json:"jti"`
			Iat  int64  `json:"iat"`
			Exp  int64  `json:"exp"`
		}{c.Shopper, "flashgate-purchase", c.Sale, c.TokenID, c.IssuedAt.Unix(), c.ExpiresAt.Unix()})
		if string(got) != string(want) {
			t.Errorf("claims of %q: %s, json.Marshal: %s", s, got, want)
		}
		if _, err := p.Verify(tok); err != nil {
			t.Errorf("Verify of a token for %q: %v", s, err)
		}
	}
}
