package signing_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/flashgate/flashgate/signing"
)

func FuzzParseHeader(f *testing.F) {
	f.Add(goldenHeader)
	f.Add(join(pSig, pNonce, pTS, pKey))
	f.Add(pKey + ",  " + pTS + ", " + pNonce + ", sig=" + strings.ToUpper(goldenSig))
	for _, tc := range malformedHeaders {
		f.Add(tc.h)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := signing.ParseHeader(s)
		if err != nil {
			if !errors.Is(err, signing.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			if p != (signing.Params{}) {
				t.Fatalf("Params %+v returned with an error", p)
			}
			if !utf8.ValidString(err.Error()) {
				t.Fatalf("error %q is not valid UTF-8", err)
			}
			return
		}
		if len(s) > signing.MaxHeaderLen {
			t.Fatalf("accepted %d bytes", len(s))
		}
		c := p.String()
		q, err := signing.ParseHeader(c)
		if err != nil {
			t.Fatalf("String() = %q does not parse: %v", c, err)
		}
		if q != p {
			t.Fatalf("String() = %q parses to %+v, want %+v", c, q, p)
		}
		if len(c) > len(s) {
			t.Fatalf("canonical form %q longer than the input %q", c, s)
		}
		// The canonical text of ts is the text that was sent.
		if !strings.Contains(s, "ts="+strconv.FormatInt(p.Timestamp, 10)) {
			t.Fatalf("ts %d not spelled the same in %q", p.Timestamp, s)
		}
	})
}

// FuzzVerify feeds Verify arbitrary requests, bound headers and signature
// headers against the golden key, its clock at the golden ts. Whatever gets
// through must be correctly signed, as checked here with crypto/hmac
// directly.
func FuzzVerify(f *testing.F) {
	f.Add(goldenMethod, goldenPath, []byte(goldenBody), "", "", "", goldenHeader)
	f.Add("POST", purchasePath, []byte(nil), purchaseAuth, purchaseToken, "", purchaseHeader)
	f.Add("POST", purchasePath, []byte(nil), "Bearer session-bob", purchaseToken, "", purchaseHeader)
	f.Add("POST", purchasePath, []byte(nil), purchaseAuth, "", purchaseToken, purchaseHeader)
	f.Add("GET", "/api/v1/time", []byte(nil), "", "", "", signing.Sign(goldenKeyID, []byte(goldenSecret), "GET", "/api/v1/time", nil, noBound, t0, goldenNonce))
	f.Add("POST", goldenPath, []byte(nil), "Bearer s", "", "1.2.3", signing.Sign(goldenKeyID, []byte(goldenSecret), "POST", goldenPath, nil, signing.Bound("Bearer s", "", "1.2.3"), t0, goldenNonce))
	f.Add(goldenMethod, goldenPath, []byte(goldenBody), "", "", "", join(pSig, pNonce, pTS, pKey))
	f.Add(goldenMethod, goldenPath, []byte(goldenBody), "", "", "", pKey+", "+pTS+", "+pNonce+", sig="+strings.ToUpper(goldenSig))
	f.Add(goldenMethod, goldenPath, []byte(goldenBody), "", "", "", "")
	for _, tc := range malformedHeaders {
		f.Add(goldenMethod, goldenPath, []byte(goldenBody), "", "", "", tc.h)
	}
	f.Fuzz(func(t *testing.T, method, path string, body []byte, auth, token, solution, header string) {
		once := &countOnce{}
		v := newVerifier(once)
		kid, err := v.Verify(context.Background(), method, path, body, signing.Bound(auth, token, solution), header)
		if err != nil {
			n := 0
			for _, s := range sentinels {
				if errors.Is(err, s) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("error %v matches %d reasons, want 1", err, n)
			}
			if kid != "" {
				t.Fatalf("key id %q returned with an error", kid)
			}
			if once.calls != 0 && !errors.Is(err, signing.ErrReplayed) && !errors.Is(err, signing.ErrUnavailable) {
				t.Fatalf("Once consulted for %v", err)
			}
			return
		}
		if kid != goldenKeyID || once.calls != 1 {
			t.Fatalf("accepted: key id %q, Once called %d times", kid, once.calls)
		}
		p, err := signing.ParseHeader(header)
		if err != nil {
			t.Fatalf("accepted a header that does not parse: %v", err)
		}
		sum := sha256.Sum256(body)
		bound := sha256.Sum256([]byte("authorization:" + auth + "\nx-purchase-token:" + token + "\nx-challenge-solution:" + solution))
		canon := strings.Join([]string{"flashgate-v1", strings.ToUpper(method), path, hex.EncodeToString(sum[:]),
			strconv.FormatInt(p.Timestamp, 10), p.Nonce, p.KeyID, hex.EncodeToString(bound[:])}, "\n")
		mac := hmac.New(sha256.New, []byte(goldenSecret))
		mac.Write([]byte(canon))
		if !hmac.Equal(mac.Sum(nil), p.Sig[:]) {
			t.Fatalf("accepted a wrong signature: %s %q body %q, bound %q %q %q, header %q", method, path, body, auth, token, solution, header)
		}
		if d := p.Timestamp - goldenTS; d < -30 || d > 30 {
			t.Fatalf("accepted ts %d", p.Timestamp)
		}
	})
}

// countOnce is a Once for which every key is new; it counts calls.
type countOnce struct{ calls int }

func (o *countOnce) Use(context.Context, string) (bool, error) {
	o.calls++
	return true, nil
}
