package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// minRSABits is the smallest RSA modulus accepted.
const minRSABits = 2048

// External verifies shopper JWTs issued by the shop's own identity provider
// with one configured public key. The algorithm follows from the key type and
// is the only one accepted: RSA => RS256, ECDSA P-256 => ES256, P-384 =>
// ES384, Ed25519 => EdDSA. It is safe for concurrent use.
type External struct {
	alg     string
	parser  *jwt.Parser
	keyFunc jwt.Keyfunc
}

// LoadExternal reads the public key from the PEM file at pemPath, either a
// PKIX "PUBLIC KEY" or a "CERTIFICATE" (whose validity is not checked), and
// returns NewExternal for it.
func LoadExternal(pemPath, issuer, audience string, now func() time.Time) (*External, error) {
	data, err := os.ReadFile(pemPath)
	if err != nil {
		return nil, fmt.Errorf("load identity key: %w", err)
	}
	pub, err := parsePublicKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("load identity key %s: %w", pemPath, err)
	}
	e, err := NewExternal(pub, issuer, audience, now)
	if err != nil {
		return nil, fmt.Errorf("load identity key %s: %w", pemPath, err)
	}
	return e, nil
}

// parsePublicKeyPEM returns the key of the first PUBLIC KEY or CERTIFICATE
// block in data.
func parsePublicKeyPEM(data []byte) (crypto.PublicKey, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New(`no "PUBLIC KEY" or "CERTIFICATE" PEM block`)
		}
		switch block.Type {
		case "PUBLIC KEY":
			pub, err := x509.ParsePKIXPublicKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse public key: %w", err)
			}
			return pub, nil
		case "CERTIFICATE":
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse certificate: %w", err)
			}
			return cert.PublicKey, nil
		}
	}
}

// NewExternal returns an External that accepts tokens signed by pub, with
// iss equal to issuer, audience among aud, an exp in the future, nbf (if
// any) in the past and a sub that is a valid shopper id. A nil now means
// time.Now.
func NewExternal(pub crypto.PublicKey, issuer, audience string, now func() time.Time) (*External, error) {
	if issuer == "" {
		return nil, errors.New("identity issuer is required")
	}
	if audience == "" {
		return nil, errors.New("identity audience is required")
	}
	alg, err := algFor(pub)
	if err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	e := &External{alg: alg}
	e.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{alg}),
		jwt.WithIssuer(issuer),
		jwt.WithAudience(audience),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(now),
	)
	e.keyFunc = func(*jwt.Token) (any, error) { return pub, nil }
	return e, nil
}

// algFor returns the one JWS algorithm accepted for pub.
func algFor(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < minRSABits {
			return "", fmt.Errorf("RSA key has %d bits, want at least %d", n, minRSABits)
		}
		return jwt.SigningMethodRS256.Alg(), nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return jwt.SigningMethodES256.Alg(), nil
		case elliptic.P384():
			return jwt.SigningMethodES384.Alg(), nil
		}
		return "", errors.New("ECDSA key must be on P-256 or P-384")
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return "", fmt.Errorf("Ed25519 key has %d bytes, want %d", len(k), ed25519.PublicKeySize)
		}
		return jwt.SigningMethodEdDSA.Alg(), nil
	}
	return "", fmt.Errorf("unsupported identity key type %T", pub)
}

// Verify checks an identity provider token and returns its sub. Errors wrap
// ErrUnauthenticated.
func (e *External) Verify(token string) (shopper string, err error) {
	var c jwt.RegisteredClaims
	t, err := e.parser.ParseWithClaims(token, &c, e.keyFunc)
	if err != nil {
		why := reason(t, err, e.alg)
		if errors.Is(err, jwt.ErrTokenRequiredClaimMissing) { // signature was good
			why = missingClaim(&c)
		}
		return "", fmt.Errorf("%w: identity token: %s", ErrUnauthenticated, why)
	}
	if c.Subject == "" {
		return "", fmt.Errorf("%w: identity token: missing sub", ErrUnauthenticated)
	}
	if err := checkShopper(c.Subject); err != nil {
		return "", fmt.Errorf("%w: identity token: %v", ErrUnauthenticated, err)
	}
	return c.Subject, nil
}

// missingClaim names the first required claim absent from c.
func missingClaim(c *jwt.RegisteredClaims) string {
	switch {
	case c.ExpiresAt == nil:
		return "missing exp"
	case c.Issuer == "":
		return "missing iss"
	}
	return "missing aud"
}
