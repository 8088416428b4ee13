package signing_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/flashgate/flashgate/signing"
)

// The golden header's parameters, for building variants.
const (
	pKey   = "keyId=" + goldenKeyID
	pTS    = "ts=1767225600"
	pNonce = "nonce=" + goldenNonce
	pSig   = "sig=" + goldenSig
)

func join(parts ...string) string { return strings.Join(parts, ",") }

func goldenParams(tb testing.TB) signing.Params {
	tb.Helper()
	p, err := signing.ParseHeader(goldenHeader)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func TestParseHeader(t *testing.T) {
	p := goldenParams(t)
	if p.KeyID != goldenKeyID || p.Timestamp != goldenTS || p.Nonce != goldenNonce {
		t.Fatalf("ParseHeader(golden) = %+v", p)
	}
	if got := p.String(); got != goldenHeader {
		t.Fatalf("String = %s, want the golden header", got)
	}
}

func TestParseHeaderAccepts(t *testing.T) {
	golden := goldenParams(t)
	pad := maxHeaderPad(len(goldenHeader))
	for name, h := range map[string]string{
		"other order":         join(pSig, pNonce, pTS, pKey),
		"spaces after commas": pKey + ", " + pTS + ",   " + pNonce + ", " + pSig,
		"upper-case sig":      join(pKey, pTS, pNonce, "sig="+strings.ToUpper(goldenSig)),
		"exactly 512 bytes":   pKey + "," + pad + pTS + "," + pNonce + "," + pSig,
	} {
		t.Run(name, func(t *testing.T) {
			p, err := signing.ParseHeader(h)
			if err != nil {
				t.Fatal(err)
			}
			if p != golden {
				t.Fatalf("got %+v, want %+v", p, golden)
			}
		})
	}
	for name, tc := range map[string]struct {
		h    string
		want signing.Params
	}{
		"ts 0":         {join(pKey, "ts=0", pNonce, pSig), signing.Params{KeyID: goldenKeyID, Timestamp: 0, Nonce: goldenNonce}},
		"ts 12 digits": {join(pKey, "ts=999999999999", pNonce, pSig), signing.Params{KeyID: goldenKeyID, Timestamp: 999999999999, Nonce: goldenNonce}},
		"keyId 1":      {join("keyId=k", pTS, pNonce, pSig), signing.Params{KeyID: "k", Timestamp: goldenTS, Nonce: goldenNonce}},
		"keyId 64":     {join("keyId="+strings.Repeat("K", 64), pTS, pNonce, pSig), signing.Params{KeyID: strings.Repeat("K", 64), Timestamp: goldenTS, Nonce: goldenNonce}},
		"nonce 16":     {join(pKey, pTS, "nonce=0123456789abcdef", pSig), signing.Params{KeyID: goldenKeyID, Timestamp: goldenTS, Nonce: "0123456789abcdef"}},
		"nonce 64 _-":  {join(pKey, pTS, "nonce="+strings.Repeat("_-", 32), pSig), signing.Params{KeyID: goldenKeyID, Timestamp: goldenTS, Nonce: strings.Repeat("_-", 32)}},
	} {
		t.Run(name, func(t *testing.T) {
			p, err := signing.ParseHeader(tc.h)
			if err != nil {
				t.Fatal(err)
			}
			tc.want.Sig = goldenParams(t).Sig
			if p != tc.want {
				t.Fatalf("got %+v, want %+v", p, tc.want)
			}
		})
	}
}

// maxHeaderPad returns the spaces that, put after a comma, make a header of
// n bytes exactly MaxHeaderLen long.
func maxHeaderPad(n int) string { return strings.Repeat(" ", signing.MaxHeaderLen-n) }

// malformedHeaders are headers ParseHeader must refuse, one reason each.
var malformedHeaders = []struct{ name, h string }{
	{"empty", ""},
	{"only spaces", "   "},
	{"missing keyId", join(pTS, pNonce, pSig)},
	{"missing ts", join(pKey, pNonce, pSig)},
	{"missing nonce", join(pKey, pTS, pSig)},
	{"missing sig", join(pKey, pTS, pNonce)},
	{"duplicate keyId", join(pKey, pKey, pTS, pNonce, pSig)},
	{"duplicate ts, same value", join(pKey, pTS, pNonce, pSig, pTS)},
	{"duplicate nonce", join(pKey, pTS, pNonce, "nonce=0123456789abcdef", pSig)},
	{"duplicate sig", join(pKey, pTS, pNonce, pSig, pSig)},
	{"unknown parameter", join(pKey, pTS, pNonce, pSig, "alg=hmac-sha256")},
	{"unknown empty name", join(pKey, pTS, pNonce, pSig, "=x")},
	{"name in other case", join("keyid="+goldenKeyID, pTS, pNonce, pSig)},
	{"no =", join(pKey, pTS, pNonce, pSig, "sig")},
	{"bad hex", join(pKey, pTS, pNonce, "sig=g"+goldenSig[1:])},
	{"short sig", join(pKey, pTS, pNonce, "sig="+goldenSig[:62])},
	{"odd sig", join(pKey, pTS, pNonce, "sig="+goldenSig[:63])},
	{"long sig", join(pKey, pTS, pNonce, pSig+"00")},
	{"empty sig", join(pKey, pTS, pNonce, "sig=")},
	{"base64 sig", join(pKey, pTS, pNonce, "sig=euS0AX3G2cg+jSlv1RX6AXafOkQO0B6BsyH4cxDjOZc=")},
	{"ts empty", join(pKey, "ts=", pNonce, pSig)},
	{"ts negative", join(pKey, "ts=-1767225600", pNonce, pSig)},
	{"ts plus sign", join(pKey, "ts=+1767225600", pNonce, pSig)},
	{"ts letter", join(pKey, "ts=17672256o0", pNonce, pSig)},
	{"ts fraction", join(pKey, "ts=1767225600.5", pNonce, pSig)},
	{"ts milliseconds", join(pKey, "ts=1767225600000", pNonce, pSig)},
	{"ts leading zero", join(pKey, "ts=01767225600", pNonce, pSig)},
	{"ts 00", join(pKey, "ts=00", pNonce, pSig)},
	{"nonce too short", join(pKey, pTS, "nonce=0123456789abcde", pSig)},
	{"nonce too long", join(pKey, pTS, "nonce="+strings.Repeat("n", 65), pSig)},
	{"nonce empty", join(pKey, pTS, "nonce=", pSig)},
	{"nonce with dot", join(pKey, pTS, "nonce=mZ3xq9L0bR2sT4uV6w.8zA", pSig)},
	{"nonce with plus", join(pKey, pTS, "nonce=mZ3xq9L0bR2sT4uV6w+8zA", pSig)},
	{"nonce with padding", join(pKey, pTS, "nonce=mZ3xq9L0bR2sT4uV6wY8zA==", pSig)},
	{"keyId empty", join("keyId=", pTS, pNonce, pSig)},
	{"keyId too long", join("keyId="+strings.Repeat("k", 65), pTS, pNonce, pSig)},
	{"keyId with dot", join("keyId=app.ios", pTS, pNonce, pSig)},
	{"keyId with space", join("keyId=app ios", pTS, pNonce, pSig)},
	{"keyId non-ASCII", join("keyId=appé", pTS, pNonce, pSig)},
	{"too long header", pKey + "," + maxHeaderPad(len(goldenHeader)-1) + pTS + "," + pNonce + "," + pSig},
	{"empty part in the middle", join(pKey, pTS, "", pNonce, pSig)},
	{"only spaces between commas", join(pKey, pTS, "  ", pNonce, pSig)},
	{"leading comma", "," + goldenHeader},
	{"trailing comma", goldenHeader + ","},
	{"trailing comma and space", goldenHeader + ", "},
	{"leading space", " " + goldenHeader},
	{"trailing space", goldenHeader + " "},
	{"space before comma", pKey + " ," + join(pTS, pNonce, pSig)},
	{"tab after comma", pKey + ",\t" + join(pTS, pNonce, pSig)},
	{"space before =", join("keyId ="+goldenKeyID, pTS, pNonce, pSig)},
	{"space after =", join("keyId= "+goldenKeyID, pTS, pNonce, pSig)},
	{"semicolons", strings.Join([]string{pKey, pTS, pNonce, pSig}, ";")},
	{"quoted value", join(`keyId="`+goldenKeyID+`"`, pTS, pNonce, pSig)},
	{"header name included", "X-Signature: " + goldenHeader},
}

func TestParseHeaderMalformed(t *testing.T) {
	for _, tc := range malformedHeaders {
		t.Run(tc.name, func(t *testing.T) {
			p, err := signing.ParseHeader(tc.h)
			if !errors.Is(err, signing.ErrMalformed) {
				t.Fatalf("ParseHeader(%q) = %+v, %v; want ErrMalformed", tc.h, p, err)
			}
			if p != (signing.Params{}) {
				t.Fatalf("ParseHeader returned %+v with its error", p)
			}
			t.Log(err)
		})
	}
}

func TestParamsStringLowerCase(t *testing.T) {
	p, err := signing.ParseHeader(join(pSig[:4]+strings.ToUpper(goldenSig), pNonce, pTS, pKey))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.String(); got != goldenHeader {
		t.Fatalf("String = %s, want %s", got, goldenHeader)
	}
}
