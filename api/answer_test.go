package api

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"testing"
)

// TestAnswerStructsWriteWhatMapsWrote: the token and order answers are
// structs that write their own JSON, for speed; what writeJSON sends for
// them must stay byte for byte what json.Encoder gave for the maps of
// before (clients and tests compare it).
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
		{"token odd strings", tokenAnswer{ExpiresAt: "\u2028", Status: `"\`, Token: "\x01\xff", TokenID: "é"},
			map[string]any{"expiresAt": "\u2028", "status": `"\`, "token": "\x01\xff", "tokenId": "é"}},
		{"order", orderAnswer{OrderID: "O", Status: "accepted"}, map[string]any{"orderId": "O", "status": "accepted"}},
		{"order polled", orderAnswer{OrderID: "O", RequestID: "R", Status: "accepted"},
			map[string]any{"orderId": "O", "requestId": "R", "status": "accepted"}},
	} {
		var want bytes.Buffer
		_ = json.NewEncoder(&want).Encode(c.want)
		rec := httptest.NewRecorder()
		writeJSON(rec, 200, c.got)
		if rec.Body.String() != want.String() {
			t.Errorf("%s: %s, want %s", c.name, rec.Body, &want)
		}
		if _, ok := c.got.(jsonAppender); !ok {
			t.Errorf("%s: %T does not write itself", c.name, c.got)
		}
	}
}
