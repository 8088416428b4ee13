package main

import "net/http"

// bareBody is every bare answer: shaped like a token answer, with the
// "session" and "shopper" of a session answer so that a load generator's
// session step works too. Its token is not a valid JWT.
var bareBody = []byte(`{"expiresAt":"2030-01-01T00:00:00Z","session":"bare.session.token","shopper":"01BARESHOPPER0000000000000","status":"issued","token":"bare.purchase.token","tokenId":"01BARETOKEN000000000000000"}` + "\n")

// bareHandler answers every request with bareBody and status 201, with the
// headers flashgate sends on a JSON answer. It reads nothing and decides
// nothing: the ceiling of net/http on this machine.
func bareHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(bareBody)
	})
}
