// Package jwstest makes HS256 compact tokens that are nearly right, to check
// a fast verifier against golang-jwt: every variant must get the same
// verdict from both.
package jwstest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flashgate/flashgate/tokens"
)

var b64 = base64.RawURLEncoding

// Keys returns a key set whose only key is key under kid, loaded from a key
// file as a deployment's would be, so that tokens and fuzz inputs are
// reproducible.
func Keys(tb testing.TB, kid string, key []byte) *tokens.KeySet {
	tb.Helper()
	data, err := json.Marshal(map[string]any{"active": kid, "keys": map[string]string{kid: base64.StdEncoding.EncodeToString(key)}})
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(tb.TempDir(), "keys.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		tb.Fatal(err)
	}
	k, err := tokens.LoadKeyFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// Header is the header segment flashgate's tokens carry for kid.
func Header(kid string) string {
	return b64.EncodeToString([]byte(`{"alg":"HS256","kid":"` + kid + `","typ":"JWT"}`))
}

// Sign returns headerJSON.payload signed with key: any header, any payload
// bytes, a correct signature.
func Sign(key []byte, headerJSON, payload string) string {
	s := b64.EncodeToString([]byte(headerJSON)) + "." + b64.EncodeToString([]byte(payload))
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(s))
	return s + "." + b64.EncodeToString(mac.Sum(nil))
}

// Headers are header JSONs a token of kid might be signed under: the
// canonical one first, then ones that a careless verifier would take.
func Headers(kid, otherKid string) []string {
	return []string{
		`{"alg":"HS256","kid":"` + kid + `","typ":"JWT"}`,
		`{"alg":"HS256","kid":"` + kid + `"}`,
		`{"kid":"` + kid + `","alg":"HS256","typ":"JWT"}`,
		`{"alg":"HS256", "kid":"` + kid + `","typ":"JWT"}`,
		`{"alg":"HS384","kid":"` + kid + `","typ":"JWT"}`,
		`{"alg":"none","kid":"` + kid + `","typ":"JWT"}`,
		`{"alg":"HS256","kid":"` + otherKid + `","typ":"JWT"}`,
		`{"alg":"HS256","typ":"JWT"}`,
		`{"alg":"HS256","kid":"` + kid + `","typ":"JWT","crit":["x"]}`,
		`{"alg":"HS256","kid":"` + kid + `","typ":"JWT"`,
	}
}

const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ "

// Mutate returns n tokens made from good by small damage: a character
// changed, dropped or added, a cut, segments swapped or repeated, padding.
// The same seed gives the same tokens.
func Mutate(good string, n int, seed uint64) []string {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	segs := strings.Split(good, ".")
	out := make([]string, 0, n)
	for len(out) < n {
		b := []byte(good)
		i := r.IntN(len(b))
		switch r.IntN(9) {
		case 0, 1, 2:
			b[i] = alphabet[r.IntN(len(alphabet))]
			out = append(out, string(b))
		case 3:
			out = append(out, string(b[:i])+string(b[i+1:]))
		case 4:
			out = append(out, string(b[:i])+string(alphabet[r.IntN(len(alphabet))])+string(b[i:]))
		case 5:
			out = append(out, string(b[:i]))
		case 6:
			if len(segs) == 3 {
				out = append(out, segs[1]+"."+segs[0]+"."+segs[2], segs[0]+"."+segs[1]+"."+segs[2]+"."+segs[2], segs[0]+"."+segs[1]+".")
			}
		case 7:
			out = append(out, good+"=", good+"==", " "+good, good+"\n")
		case 8:
			// The last character of the signature carries two spare bits.
			last := strings.IndexByte(alphabet[:64], good[len(good)-1])
			if last >= 0 {
				out = append(out, good[:len(good)-1]+string(alphabet[last^(1+r.IntN(3))]))
			}
		}
	}
	return out[:n]
}
