package identity_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/identity"
	"github.com/flashgate/flashgate/internal/jwstest"
)

// sessionPayloads are claim sets around the one Issue writes (iat t0, exp
// t0+1h at a clock of t0): right, nearly right, and strange JSON.
func sessionPayloads() []string {
	iat, exp := t0.Unix(), t0.Add(time.Hour).Unix()
	c := func(rest string) string {
		return fmt.Sprintf(`{"iss":"flashgate","sub":"shopper-1","aud":"flashgate-session","iat":%d,"exp":%d%s}`, iat, exp, rest)
	}
	return []string{
		c(""),
		c(`,"extra":[1,2,{"a":null}]`),
		c(`,"sub":"shopper-2"`),
		c(`,"exp":null`),
		c(`,"exp":"1700003600"`),
		c(`,"exp":1.7e9`),
		c(`,"SUB":"shopper-3"`),
		c(`,"sub":"shopper\u002d4"`),
		c(`,"sub":""`),
		c(`,"sub":"two words"`),
		c(`,"aud":"flashgate-purchase"`),
		c(`,"iss":"evil"`),
		c(`,"iat":0`),
		c(`,"nbf":99999999999`),
		c(`,"exp":1700000000`),
		c(`,"exp":1700000001`),
		c(`,"extra":"` + strings.Repeat("x", 400) + `"`),
		strings.Replace(c(""), "shopper-1", strings.Repeat("s", 300), 1),
		c("") + " ",
		c("") + " x",
		c("") + "{}",
		" \n" + c(""),
		fmt.Sprintf(`{"iss":"flashgate","sub":"shopper-1","aud":"flashgate-session","iat":%d}`, iat),
		fmt.Sprintf(`{"iss":"flashgate","sub":"shopper-1","aud":["flashgate-session"],"iat":%d,"exp":%d}`, iat, exp),
		`{}`, `null`, `[]`, `"x"`, ``, `{`,
	}
}

// The fast path of Verify must never take a token golang-jwt refuses, nor
// read another shopper from one; whatever it does not take, the library
// decides. So Verify gives exactly the library's verdict, reason and all.
func TestSessionFastPathAgreesWithLibrary(t *testing.T) {
	keys := newKeys(t)
	kid, key := keys.Active()
	otherKid, _ := newKeys(t).Active()
	s := identity.NewSessions(keys, time.Hour, clockAt(t0))
	good, _, err := s.Issue("shopper-1")
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := identity.VerifyFast(s, good); !ok || got != "shopper-1" {
		t.Fatalf("fast path does not take a session Issue wrote: %q, %v", got, ok)
	}
	var toks []string
	for _, h := range jwstest.Headers(kid, otherKid) {
		for _, p := range sessionPayloads() {
			toks = append(toks, jwstest.Sign(key, h, p))
		}
	}
	toks = append(toks, jwstest.Mutate(good, 3000, 1)...)
	fast := 0
	for _, tok := range toks {
		want, werr := identity.VerifyLib(s, tok)
		if got, ok := identity.VerifyFast(s, tok); ok {
			fast++
			if werr != nil || got != want {
				t.Errorf("fast path took %q as %q; the library says %q, %v", tok, got, want, werr)
			}
		}
		got, err := s.Verify(tok)
		if got != want || fmt.Sprint(err) != fmt.Sprint(werr) {
			t.Errorf("Verify(%q) = %q, %v; the library says %q, %v", tok, got, err, want, werr)
		}
	}
	// Good tokens among the variants: the canonical claims, the extra field,
	// the escaped and the duplicated sub, leading and trailing space, and
	// mutations that change only spare bits of the signature.
	if fast < 6 {
		t.Errorf("the fast path took only %d of %d variants", fast, len(toks))
	}
	t.Logf("%d variants, %d taken by the fast path", len(toks), fast)
}

// Any claims, signed under the canonical header (which the fast path
// reads): Verify's verdict is the library's.
func FuzzSessionFastPathClaims(f *testing.F) {
	for _, p := range sessionPayloads() {
		f.Add([]byte(p))
	}
	key := []byte("0123456789abcdef0123456789abcdef")
	keys := jwstest.Keys(f, "k1", key)
	s := identity.NewSessions(keys, time.Hour, clockAt(t0))
	f.Fuzz(func(t *testing.T, payload []byte) {
		tok := jwstest.Sign(key, `{"alg":"HS256","kid":"k1","typ":"JWT"}`, string(payload))
		want, werr := identity.VerifyLib(s, tok)
		if got, ok := identity.VerifyFast(s, tok); ok && (werr != nil || got != want) {
			t.Fatalf("fast path took %q as %q; the library says %q, %v", payload, got, want, werr)
		}
		if got, err := s.Verify(tok); got != want || fmt.Sprint(err) != fmt.Sprint(werr) {
			t.Fatalf("Verify(%q) = %q, %v; the library says %q, %v", payload, got, err, want, werr)
		}
	})
}

func BenchmarkSessionVerify(b *testing.B) {
	s := identity.NewSessions(newKeys(b), time.Hour, clockAt(t0))
	tok, _, err := s.Issue("shopper-1")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Verify(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("library", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := identity.VerifyLib(s, tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}
