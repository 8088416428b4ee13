package api

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/flashgate/flashgate/front"
)

// TestWriteErrorClientGone: a request whose client went away is answered
// 499 and not logged as an internal error; a cancellation that is not the
// client's is one.
func TestWriteErrorClientGone(t *testing.T) {
	// A request given up while queued because its client left is both
	// "not appended" (503) and cancelled: the client is gone, so 499.
	notAppended := fmt.Errorf("%w: %w", front.ErrNotAppended, context.Canceled)
	r := httptest.NewRequestWithContext(cancelled(), "POST", "/api/v1/sales/s/tokens", nil)
	w := httptest.NewRecorder()
	writeError(w, r, slog.New(slog.NewTextHandler(io.Discard, nil)), notAppended)
	if w.Code != statusClientClosed {
		t.Errorf("client gone before its request was appended: %d, want 499", w.Code)
	}
	for _, gone := range []bool{true, false} {
		var logged bytes.Buffer
		log := slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelError}))
		ctx, cancel := context.WithCancel(context.Background())
		if gone {
			cancel()
		} else {
			defer cancel()
		}
		r := httptest.NewRequestWithContext(ctx, "POST", "/api/v1/sales/s/tokens", nil)
		w := httptest.NewRecorder()
		writeError(w, r, log, context.Canceled)
		switch {
		case gone && (w.Code != statusClientClosed || logged.Len() > 0):
			t.Errorf("client gone: %d, logged %q; want 499, nothing logged", w.Code, logged.String())
		case !gone && (w.Code != 500 || !strings.Contains(logged.String(), "internal error")):
			t.Errorf("client still there: %d, logged %q; want 500, logged", w.Code, logged.String())
		}
	}
}

func cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
