package identity

// VerifyLib and VerifyFast expose the two halves of Sessions.Verify, so the
// tests can hold the fast one to the library's verdicts.
func VerifyLib(s *Sessions, token string) (string, error) { return s.verifyLib(token) }
func VerifyFast(s *Sessions, token string) (string, bool) { return s.verifyFast(token) }
