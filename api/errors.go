package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"sync"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/front"
	"github.com/flashgate/flashgate/handlers"
)

// Error is an answer other than success: an HTTP status, a stable code for
// programs, a message for people, and optional fields.
type Error struct {
	Status     int
	Code       string
	Message    string
	Fields     map[string]any
	RetryAfter int // seconds; 0: no Retry-After header
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func newError(status int, code, msg string) *Error {
	return &Error{Status: status, Code: code, Message: msg}
}

func (e *Error) with(k string, v any) *Error {
	if e.Fields == nil {
		e.Fields = map[string]any{}
	}
	e.Fields[k] = v
	return e
}

// reasonError is the answer to a TokenDenied, PurchaseRefused or
// QueueJoinDenied reason.
func reasonError(reason string) *Error {
	switch reason {
	case handlers.ReasonQueueRequired:
		return newError(http.StatusForbidden, reason,
			"this sale hands out purchase tokens only through its waiting room: join the queue first")
	case "no_queue":
		return newError(http.StatusNotFound, "queue_not_enabled", "this sale has no waiting room")
	}
	msg := handlers.ReasonError(reason).Error()
	switch reason {
	case events.ReasonNotOpen:
		return newError(http.StatusTooEarly, reason, msg)
	case events.ReasonClosed, events.ReasonSoldOut, events.ReasonQuotaExhausted:
		return newError(http.StatusGone, reason, msg)
	case events.ReasonLimitReached, events.ReasonTokenUsed:
		return newError(http.StatusConflict, reason, msg)
	case events.ReasonTokenUnknown, events.ReasonTokenExpired:
		return newError(http.StatusUnauthorized, reason, msg)
	case events.ReasonTokenNotYours:
		return newError(http.StatusForbidden, reason, msg)
	}
	return newError(http.StatusInternalServerError, "internal", msg)
}

// statusClientClosed is the status of a request whose client went away
// before its answer (nginx's 499; net/http has no name for it).
const statusClientClosed = 499

// writeError is the one place an error becomes an HTTP answer. Only
// internal errors are logged at error level.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	var e *Error
	switch {
	case errors.As(err, &e):
	case errors.Is(err, front.ErrOverloaded):
		e = &Error{Status: http.StatusServiceUnavailable, Code: "overloaded", Message: "too many requests in flight, retry shortly", RetryAfter: 1}
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away: nothing is wrong here, and no one reads
		// the answer (499, as proxies count it in their logs and metrics).
		// Before the 503s: a request given up as its client left is both.
		e = &Error{Status: statusClientClosed, Code: "client_closed", Message: "the client closed the request"}
	case errors.Is(err, front.ErrUnavailable), errors.Is(err, front.ErrNotReady), errors.Is(err, context.DeadlineExceeded):
		e = &Error{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "the event stream is unavailable, retry shortly", RetryAfter: 1}
	default:
		log.Error("internal error", "request_id", reqID(r), "method", r.Method, "route", r.Pattern, "err", err)
		e = newError(http.StatusInternalServerError, "internal", "internal error")
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	body := map[string]any{"error": e.Code, "message": e.Message}
	for k, v := range e.Fields {
		body[k] = v
	}
	writeJSON(w, e.Status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if a, ok := v.(jsonAppender); ok {
		bp := answerBufs.Get().(*[]byte)
		b := append(a.appendJSON((*bp)[:0]), '\n')
		_, _ = w.Write(b)
		*bp = b
		answerBufs.Put(bp)
		return
	}
	_ = json.NewEncoder(w).Encode(v)
}

// jsonAppender is an answer that writes itself: the bytes json.Encoder
// writes for it, less the reflection. The answers to the hot requests (a
// token, a purchase) are.
type jsonAppender interface {
	appendJSON(b []byte) []byte
}

var answerBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}
