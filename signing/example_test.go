package signing_test

import (
	"fmt"
	"time"

	"github.com/flashgate/flashgate/signing"
)

// The test vector of the package doc, signed in Go.
func ExampleSign() {
	secret := []byte("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	ts := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := signing.Sign("app-ios-1", secret, "POST", "/api/v1/sales/demo/tokens?qty=2", []byte(`{"sale":"demo"}`), ts, "mZ3xq9L0bR2sT4uV6wY8zA")
	fmt.Println(signing.Header + ": " + h)
	// Output:
	// X-Signature: keyId=app-ios-1,ts=1767225600,nonce=mZ3xq9L0bR2sT4uV6wY8zA,sig=7ae4b4017dc6d9c83e8d296fd515fa01769f3a440ed01e81b32f87310e083997
}
