package signing_test

import (
	"fmt"
	"net/http"
	"time"

	"github.com/flashgate/flashgate/signing"
)

// The first test vector of the package doc, signed in Go: a request without
// any bound header.
func ExampleSign() {
	secret := []byte("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	ts := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	bound := signing.Bound("", "", "")
	h := signing.Sign("app-ios-1", secret, "POST", "/api/v1/sales/demo/tokens?qty=2", []byte(`{"sale":"demo"}`), bound, ts, "mZ3xq9L0bR2sT4uV6wY8zA")
	fmt.Println(signing.Header + ": " + h)
	// Output:
	// X-Signature: keyId=app-ios-1,ts=1767225600,nonce=mZ3xq9L0bR2sT4uV6wY8zA,sig=cbff3d4fd9cf1ec611e3b86bca3ae9975087b5300f7295807ad9549cdeadfcd0
}

// The second test vector of the package doc: a purchase, signed with the
// session and the purchase token it is sent with.
func ExampleSign_purchase() {
	secret := []byte("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	ts := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	req, _ := http.NewRequest("POST", "https://shop.example/api/v1/sales/demo/purchases", nil)
	req.Header.Set("Authorization", "Bearer session-alice")
	req.Header.Set("X-Purchase-Token", "token-demo-1")
	bound := signing.BoundOf(req.Header) // signing.Bound("Bearer session-alice", "token-demo-1", "")
	req.Header.Set(signing.Header, signing.Sign("app-ios-1", secret, req.Method, req.URL.RequestURI(), nil, bound, ts, "nQ4yr0M1cS3tU5vW7xZ9aB"))
	fmt.Printf("bound: %x\n", bound)
	fmt.Println(signing.Header + ": " + req.Header.Get(signing.Header))
	// Output:
	// bound: 2f69f37fe19de7c00acdfab5a867c1ff93e87f27103c24635e85a41ee5796b5b
	// X-Signature: keyId=app-ios-1,ts=1767225600,nonce=nQ4yr0M1cS3tU5vW7xZ9aB,sig=fccbb014658e59a81fa31d015582b0ab97d035b80d4bf5807bb8be74cceacd35
}
