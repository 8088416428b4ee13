package tokens

// VerifyLib and VerifyFast expose the two halves of Purchase.Verify, so the
// tests can hold the fast one to the library's verdicts.
func VerifyLib(p *Purchase, token string) (Claims, error) { return p.verifyLib(token) }
func VerifyFast(p *Purchase, token string) (Claims, bool) { return p.verifyFast(token) }
