package stream

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// A cluster that cannot place a replicated stream yet is told apart from
// other refusals, through the wrapping Ensure adds.
func TestIsClusterNotReady(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&jetstream.APIError{Code: 400, ErrorCode: 10005, Description: "no suitable peers for placement, peer offline"}, true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, true},
		{&jetstream.APIError{Code: 500, ErrorCode: 10074, Description: "replicas > 1 not supported in non-clustered mode"}, false},
		{&jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence}, false},
		{errors.New("no suitable peers for placement"), false},
		{nil, false},
	} {
		wrapped := fmt.Errorf("ensure stream %s: %w", "FLASHGATE", c.err)
		if got := IsClusterNotReady(wrapped); got != c.want {
			t.Errorf("IsClusterNotReady(%v) = %v, want %v", wrapped, got, c.want)
		}
	}
}
