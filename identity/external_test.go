package identity_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/flashgate/flashgate/identity"
)

const (
	testIssuer   = "https://id.shop.example"
	testAudience = "flashgate"
)

// provider is an identity provider key pair and the algorithm it signs with.
type provider struct {
	name   string
	method jwt.SigningMethod
	priv   crypto.Signer
}

func providers(t *testing.T) []provider {
	t.Helper()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return []provider{
		{"RSA", jwt.SigningMethodRS256, rsaKey},
		{"P-256", jwt.SigningMethodES256, p256},
		{"P-384", jwt.SigningMethodES384, p384},
		{"Ed25519", jwt.SigningMethodEdDSA, edKey},
	}
}

// sameKind returns a fresh key of the same kind as priv.
func sameKind(t *testing.T, priv crypto.Signer) crypto.Signer {
	t.Helper()
	var k crypto.Signer
	var err error
	switch priv := priv.(type) {
	case *rsa.PrivateKey:
		k, err = rsa.GenerateKey(rand.Reader, priv.N.BitLen())
	case *ecdsa.PrivateKey:
		k, err = ecdsa.GenerateKey(priv.Curve, rand.Reader)
	case ed25519.PrivateKey:
		_, k, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writePEM(t *testing.T, blockType string, der []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "idp.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func writePublicKey(t *testing.T, pub crypto.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, "PUBLIC KEY", der)
}

func writeCertificate(t *testing.T, priv crypto.Signer) string {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "id.shop.example"},
		NotBefore:    t0.Add(-time.Hour),
		NotAfter:     t0.Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, "CERTIFICATE", der)
}

func idpMap() jwt.MapClaims {
	return jwt.MapClaims{
		"iss": testIssuer,
		"sub": "user-7",
		"aud": testAudience,
		"iat": t0.Add(-time.Minute).Unix(),
		"exp": t0.Add(time.Hour).Unix(),
	}
}

func TestExternal(t *testing.T) {
	provs := providers(t)
	for i, p := range provs {
		t.Run(p.name, func(t *testing.T) {
			pemPath := writePublicKey(t, p.priv.Public())
			pemBytes, err := os.ReadFile(pemPath)
			if err != nil {
				t.Fatal(err)
			}
			der, err := x509.MarshalPKIXPublicKey(p.priv.Public())
			if err != nil {
				t.Fatal(err)
			}
			e, err := identity.LoadExternal(pemPath, testIssuer, testAudience, clockAt(t0))
			if err != nil {
				t.Fatal(err)
			}
			tok := func(c jwt.MapClaims) string { return sign(t, p.method, p.priv, "", c) }
			good := tok(idpMap())
			other := provs[(i+1)%len(provs)]

			valid := []struct {
				name, token string
			}{
				{"plain", good},
				{"aud list", tok(with(idpMap(), "aud", []string{"other", testAudience}))},
				{"nbf now", tok(with(idpMap(), "nbf", t0.Unix()))},
				{"with kid", sign(t, p.method, p.priv, "idp-key-1", idpMap())},
			}
			for _, tt := range valid {
				if got, err := e.Verify(tt.token); err != nil || got != "user-7" {
					t.Errorf("%s: Verify = %q, %v; want user-7", tt.name, got, err)
				}
			}

			refused := []struct {
				name, token, reason string
			}{
				{"expired", tok(with(idpMap(), "exp", t0.Unix())), "expired"},
				{"not yet valid", tok(with(idpMap(), "nbf", t0.Add(time.Second).Unix())), "not valid yet"},
				{"wrong issuer", tok(with(idpMap(), "iss", "https://evil.example")), "wrong issuer"},
				{"wrong audience", tok(with(idpMap(), "aud", "flashgate-session")), "wrong audience"},
				{"no exp", tok(with(idpMap(), "exp", nil)), "missing exp"},
				{"no iss", tok(with(idpMap(), "iss", nil)), "missing iss"},
				{"no aud", tok(with(idpMap(), "aud", nil)), "missing aud"},
				{"empty aud", tok(with(idpMap(), "aud", []string{})), "missing aud"},
				{"no sub", tok(with(idpMap(), "sub", nil)), "missing sub"},
				{"bad shopper id", tok(with(idpMap(), "sub", "user 7")), "shopper id"},
				{"long shopper id", tok(with(idpMap(), "sub", strings.Repeat("u", 129))), "shopper id"},
				{"wrong key", sign(t, p.method, sameKind(t, p.priv), "", idpMap()), "bad signature"},
				{"other algorithm", sign(t, other.method, other.priv, "", idpMap()), "algorithm not allowed"},
				{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", idpMap()), "algorithm not allowed"},
				{"HS256 with PEM as secret", sign(t, jwt.SigningMethodHS256, pemBytes, "", idpMap()), "algorithm not allowed"},
				{"HS256 with DER as secret", sign(t, jwt.SigningMethodHS256, der, "", idpMap()), "algorithm not allowed"},
				{"tampered signature", flip(good, len(good)-10), "bad signature"},
				{"garbage", "a.b.c", "malformed"},
			}
			if p.method == jwt.SigningMethodRS256 {
				refused = append(refused, struct{ name, token, reason string }{
					"PS256 right key", sign(t, jwt.SigningMethodPS256, p.priv, "", idpMap()), "algorithm not allowed",
				})
			}
			for _, tt := range refused {
				t.Run(tt.name, func(t *testing.T) { checkRefused(t, e, tt.token, tt.reason) })
			}
		})
	}
}

func TestExternalShopperIDs(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	e, err := identity.NewExternal(priv.Public(), testIssuer, testAudience, clockAt(t0))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range shopperIDs {
		got, err := e.Verify(sign(t, jwt.SigningMethodEdDSA, priv, "", with(idpMap(), "sub", tt.id)))
		if tt.ok != (err == nil) || tt.ok && got != tt.id {
			t.Errorf("sub %q: Verify = %q, %v; want ok %v", tt.id, got, err, tt.ok)
		}
	}
}

func TestLoadExternalCertificate(t *testing.T) {
	for _, p := range providers(t) {
		t.Run(p.name, func(t *testing.T) {
			e, err := identity.LoadExternal(writeCertificate(t, p.priv), testIssuer, testAudience, clockAt(t0))
			if err != nil {
				t.Fatal(err)
			}
			if got, err := e.Verify(sign(t, p.method, p.priv, "", idpMap())); err != nil || got != "user-7" {
				t.Fatalf("Verify = %q, %v", got, err)
			}
		})
	}
}

func TestLoadExternalErrors(t *testing.T) {
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPath := writePublicKey(t, edPub)
	privDER, err := x509.MarshalPKCS8PrivateKey(edPriv)
	if err != nil {
		t.Fatal(err)
	}
	noPEM := filepath.Join(t.TempDir(), "key.txt")
	if err := os.WriteFile(noPEM, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, path, issuer, audience, want string
	}{
		{"RSA 1024", writePublicKey(t, rsa1024.Public()), testIssuer, testAudience, "1024 bits, want at least 2048"},
		{"P-521", writePublicKey(t, p521.Public()), testIssuer, testAudience, "P-256 or P-384"},
		{"no PEM", noPEM, testIssuer, testAudience, `no "PUBLIC KEY" or "CERTIFICATE" PEM block`},
		{"private key only", writePEM(t, "PRIVATE KEY", privDER), testIssuer, testAudience, `no "PUBLIC KEY"`},
		{"bad public key", writePEM(t, "PUBLIC KEY", []byte("junk")), testIssuer, testAudience, "parse public key"},
		{"bad certificate", writePEM(t, "CERTIFICATE", []byte("junk")), testIssuer, testAudience, "parse certificate"},
		{"no issuer", edPath, "", testAudience, "issuer is required"},
		{"no audience", edPath, testIssuer, "", "audience is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := identity.LoadExternal(tt.path, tt.issuer, tt.audience, nil)
			if err == nil {
				t.Fatalf("LoadExternal = %v, want error", e)
			}
			if msg := err.Error(); !strings.Contains(msg, tt.path) || !strings.Contains(msg, tt.want) {
				t.Fatalf("err = %q, want it to name %s and say %q", msg, tt.path, tt.want)
			}
		})
	}

	missing := filepath.Join(t.TempDir(), "missing.pem")
	if _, err := identity.LoadExternal(missing, testIssuer, testAudience, nil); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Fatalf("missing file: err = %v", err)
	}
	if _, err := identity.NewExternal([]byte("secret"), testIssuer, testAudience, nil); err == nil || !strings.Contains(err.Error(), "unsupported") {
		t.Fatalf("HMAC secret as key: err = %v", err)
	}
}
