package api

import (
	"encoding/json"
	"testing"
)

// TestAnswerStructsWriteWhatMapsWrote: the token and order answers are
// structs for speed; their JSON must stay byte for byte what the maps of
// before gave (clients and tests compare it).
func TestAnswerStructsWriteWhatMapsWrote(t *testing.T) {
	for _, c := range []struct {
		name string
		got  any
		want map[string]any
	}{
		{"token", tokenAnswer{ExpiresAt: "2026-12-01T10:05:00Z", Status: "issued", Token: "a.b.c", TokenID: "T"},
			map[string]any{"expiresAt": "2026-12-01T10:05:00Z", "status": "issued", "token": "a.b.c", "tokenId": "T"}},
		{"token polled", tokenAnswer{ExpiresAt: "x", RequestID: "R", Status: "already_issued", Token: "<&>", TokenID: "T"},
			map[string]any{"expiresAt": "x", "requestId": "R", "status": "already_issued", "token": "<&>", "tokenId": "T"}},
		{"order", orderAnswer{OrderID: "O", Status: "accepted"}, map[string]any{"orderId": "O", "status": "accepted"}},
		{"order polled", orderAnswer{OrderID: "O", RequestID: "R", Status: "accepted"},
			map[string]any{"orderId": "O", "requestId": "R", "status": "accepted"}},
	} {
		got, _ := json.Marshal(c.got)
		want, _ := json.Marshal(c.want)
		if string(got) != string(want) {
			t.Errorf("%s: %s, want %s", c.name, got, want)
		}
	}
}
