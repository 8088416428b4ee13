// Package events is flashgate's vocabulary: every request and every decision
// is one of the facts defined here. The package has no NATS dependency, so the
// wire format is table-tested and fuzzed on its own.
//
// Three kinds of message travel on the stream (see Subject*):
//
//   - fg.sale.<sale>: one SaleCreated event, the sale's configuration.
//   - fg.req.<sale>:  a RequestBatch, the requests one front appended together.
//   - fg.dec.<sale>:  a DecisionBatch, one commit of the sale's writer: the
//     decisions of a batch together with the sale's head after it.
package events

import (
	"fmt"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
)

// SchemaVersion is the version Encode writes. Decode refuses any other
// version it does not know how to upgrade.
const SchemaVersion = 3

// Type names a fact. Facts are in the past tense.
type Type string

// The event types.
const (
	TypeSaleCreated       Type = "SaleCreated"
	TypeTokenRequested    Type = "TokenRequested"
	TypePurchaseRequested Type = "PurchaseRequested"
	TypeTokenIssued       Type = "TokenIssued"
	TypeTokenDenied       Type = "TokenDenied"
	TypeTokenExpired      Type = "TokenExpired"
	TypePurchaseAccepted  Type = "PurchaseAccepted"
	TypePurchaseRefused   Type = "PurchaseRefused"
	// An operator opens or closes a sale; the writer decides it in stream
	// order like every other request, so replay sees the schedule change
	// exactly where it happened.
	TypeSaleUpdateRequested Type = "SaleUpdateRequested"
	TypeSaleUpdated         Type = "SaleUpdated"

	// The waiting room (schema version 3). Joins, leaves, presence and
	// claims are requests any process appends; the sale's writer decides
	// the order, the admissions and who lost their place.
	TypeQueueJoinRequested  Type = "QueueJoinRequested"
	TypeQueueLeaveRequested Type = "QueueLeaveRequested"
	TypeQueueSeenRequested  Type = "QueueSeenRequested" // shoppers still there
	TypeQueueClaimRequested Type = "QueueClaimRequested"
	TypeQueueJoined         Type = "QueueJoined"
	TypeQueueJoinDenied     Type = "QueueJoinDenied"
	TypeQueueShuffled       Type = "QueueShuffled" // at opening: the seed of the pre-queue's order
	TypeQueueAdmitted       Type = "QueueAdmitted" // with the TokenIssued that hands over the token
	TypeQueueClaimed        Type = "QueueClaimed"
	TypeQueueSeen           Type = "QueueSeen"   // the tickets of a QueueSeenRequested still waiting
	TypeQueueLeft           Type = "QueueLeft"   // left, idle, unclaimed
	TypeQueueClosed         Type = "QueueClosed" // sold out or closed: everyone still waiting is done

	// Fulfilment: what became of an accepted purchase at the provider. The
	// fulfilment worker appends them, one order's on its own subject
	// (OrderSubject); their Request is the order id (the purchase request's
	// id) and their Shopper the buyer. An older build meets them as
	// ErrUnknownType, "too new".
	TypeOrderAttemptFailed Type = "OrderAttemptFailed" // a call to the provider failed; it is retried
	TypeOrderConfirmed     Type = "OrderConfirmed"     // the provider took the order: final, at most once an order
	TypeOrderFailed        Type = "OrderFailed"        // given up: the order is in the dead-letter stream
	TypeOrderRequeued      Type = "OrderRequeued"      // an operator sent a dead-lettered order back to the worker
)

// IsOrder reports whether t is a fulfilment outcome of an order.
func (t Type) IsOrder() bool {
	switch t {
	case TypeOrderAttemptFailed, TypeOrderConfirmed, TypeOrderFailed, TypeOrderRequeued:
		return true
	}
	return false
}

// Actions of a SaleUpdateRequested.
const (
	ActionOpen  = "open"  // open now: opensAt = now if later; a closed sale reopens
	ActionClose = "close" // close now
)

// IsRequest reports whether t is a shopper's request (decided by the writer).
func (t Type) IsRequest() bool {
	switch t {
	case TypeTokenRequested, TypePurchaseRequested, TypeSaleUpdateRequested,
		TypeQueueJoinRequested, TypeQueueLeaveRequested, TypeQueueSeenRequested, TypeQueueClaimRequested:
		return true
	}
	return false
}

// AnswersNoRequest reports whether decisions of type t may name no request:
// the writer decides them on its own (a token's expiry, the queue's shuffle,
// an idle or unclaimed turn, the queue's end).
func (t Type) AnswersNoRequest() bool {
	switch t {
	case TypeTokenExpired, TypeQueueShuffled, TypeQueueLeft, TypeQueueClosed:
		return true
	}
	return false
}

// Reasons carried by TokenDenied and PurchaseRefused.
const (
	ReasonNotOpen        = "not_open"
	ReasonClosed         = "sale_closed"
	ReasonSoldOut        = "sold_out"
	ReasonQuotaExhausted = "quota_exhausted"
	ReasonLimitReached   = "limit_reached"
	ReasonTokenUnknown   = "token_invalid"
	ReasonTokenExpired   = "token_expired"
	ReasonTokenUsed      = "token_used"
	ReasonTokenNotYours  = "token_not_yours"
)

// Event is one fact. Requests carry Shopper and ClientRequestID; decisions
// carry Request, the ID of the request they answer (TokenExpired answers no
// request: the writer decides it on its own when a token runs out).
type Event struct {
	ID              string    // ULID
	Type            Type      //
	Version         int       // schema version of Data
	Sale            string    //
	Time            time.Time // when the front received the request, or when the writer decided
	Shopper         string    //
	ClientRequestID string    //
	Request         string    //
	Data            any       // *SaleCreated, *TokenRequested, ... matching Type
}

// SaleCreated is a sale's configuration, written once when an operator
// creates it.
type SaleCreated struct {
	Stock        int64     `json:"stock"`
	QuotaBuffer  float64   `json:"quotaBuffer"`
	Quota        int64     `json:"quota"`
	PerUserLimit int64     `json:"perUserLimit"`
	TokenTTL     Duration  `json:"tokenTTL"`
	OpensAt      time.Time `json:"opensAt"`
	ClosesAt     time.Time `json:"closesAt,omitzero"`
	// Front policy (schema version 3): checks every process's front makes
	// before a request reaches the writer. They decide nothing the writer
	// decides, so replay and the audit ignore them.
	Challenge      *Challenge `json:"challenge,omitempty"`      // a human check before token requests; nil: none
	SignedRequests bool       `json:"signedRequests,omitempty"` // token and purchase requests must carry an app's X-Signature
	// Queue, if set, puts a waiting room in front of the tokens (schema
	// version 3): tokens are handed out only by admission from the queue.
	Queue *Queue `json:"queue,omitempty"`
}

// Queue is a sale's waiting room.
type Queue struct {
	// PreQueueOpensAt is when shoppers may start to join, before the sale
	// opens; they are put in a random order at the opening. Zero: joins
	// open with the sale.
	PreQueueOpensAt time.Time `json:"preQueueOpensAt,omitzero"`
	AdmissionRate   float64   `json:"admissionRate"` // admitted per second at most
	ClaimWindow     Duration  `json:"claimWindow"`   // an admitted shopper's time to take the token
	IdleTimeout     Duration  `json:"idleTimeout"`   // a waiting shopper's silence that loses the place
}

// Bounds of a queue's settings.
const (
	MinAdmissionRate = 0.01 // one every 100 s
	MaxAdmissionRate = 100_000
	MinQueueWindow   = time.Second
	MaxQueueWindow   = 24 * time.Hour
)

// Check reports what is wrong with a sale's queue; nil is none.
func (q *Queue) Check(opensAt time.Time) error {
	switch {
	case q == nil:
		return nil
	case !(q.AdmissionRate >= MinAdmissionRate && q.AdmissionRate <= MaxAdmissionRate):
		return fmt.Errorf("queue admissionRate %v outside %v..%d", q.AdmissionRate, MinAdmissionRate, MaxAdmissionRate)
	case time.Duration(q.ClaimWindow) < MinQueueWindow || time.Duration(q.ClaimWindow) > MaxQueueWindow:
		return fmt.Errorf("queue claimWindow %v outside %v..%v", time.Duration(q.ClaimWindow), MinQueueWindow, MaxQueueWindow)
	case time.Duration(q.IdleTimeout) < MinQueueWindow || time.Duration(q.IdleTimeout) > MaxQueueWindow:
		return fmt.Errorf("queue idleTimeout %v outside %v..%v", time.Duration(q.IdleTimeout), MinQueueWindow, MaxQueueWindow)
	case !q.PreQueueOpensAt.IsZero() && (!ValidScheduleTime(q.PreQueueOpensAt) || q.PreQueueOpensAt.After(opensAt)):
		return fmt.Errorf("queue preQueueOpensAt must be a time before the opening")
	}
	return nil
}

// QueueJoinRequested is a shopper joining a sale's waiting room.
type QueueJoinRequested struct{}

// QueueLeaveRequested is a shopper leaving the waiting room.
type QueueLeaveRequested struct {
	Ticket string `json:"ticket"`
}

// QueueSeenRequested says that shoppers with these tickets were still
// there (polling or listening). Fronts send it for many tickets at once;
// its Shopper is "front".
type QueueSeenRequested struct {
	Tickets []string `json:"tickets"`
}

// QueueClaimRequested says an admitted shopper has taken the token.
type QueueClaimRequested struct {
	Ticket string `json:"ticket"`
}

// QueueJoined gives a shopper a ticket. The ticket is the id of the first
// join request. Place is the 0-based place in the admission order, or -1
// for a pre-queue join (the place is drawn at opening: PreIndex is the
// join's rank among the pre-queue joins). Already marks the answer to a
// shopper who joined before: the same ticket.
type QueueJoined struct {
	Ticket   string `json:"ticket"`
	Place    int64  `json:"place"`
	PreIndex int64  `json:"preIndex,omitempty"`
	Already  bool   `json:"already,omitempty"`
}

// QueueJoinDenied refuses a join (not_open before the pre-queue, closed,
// sold out).
type QueueJoinDenied struct {
	Reason string `json:"reason"`
}

// QueueShuffled records, at the opening, the seed of the pre-queue's order:
// the PreQueue shoppers who joined before take places
// queue.Permutation(queue.SeedOf(Seed), PreQueue).
type QueueShuffled struct {
	Seed     uint64 `json:"seed"`
	PreQueue int64  `json:"preQueue"`
}

// QueueAdmitted lets a ticket's shopper in: the TokenIssued answering the
// same join request hands over the token, which the shopper must claim by
// ClaimBy.
type QueueAdmitted struct {
	Ticket  string    `json:"ticket"`
	Place   int64     `json:"place"`
	TokenID string    `json:"tokenId"`
	ClaimBy time.Time `json:"claimBy"`
}

// QueueSeen records the waiting tickets a QueueSeenRequested named: they
// were there at the batch's time.
type QueueSeen struct {
	Tickets []string `json:"tickets"`
}

// QueueClaimed records that an admitted shopper took the token.
type QueueClaimed struct {
	Ticket string `json:"ticket"`
}

// Reasons a ticket leaves the queue.
const (
	LeftByShopper = "left"        // the shopper left
	LeftIdle      = "idle"        // silent past the idle timeout when the turn came
	LeftUnclaimed = "unclaimed"   // admitted, the token not taken in the claim window
	LeftNothing   = "not_waiting" // a leave for a ticket that is not the shopper's or not in the queue: changes nothing
)

// QueueLeft records a ticket leaving the queue.
type QueueLeft struct {
	Ticket string `json:"ticket"`
	Reason string `json:"reason"`
}

// QueueClosed ends the queue: every ticket still waiting is done, for
// Reason (sold_out or sale_closed).
type QueueClosed struct {
	Reason string `json:"reason"`
}

// Kinds of human check.
const (
	ChallengePoW     = "pow"     // a proof-of-work puzzle, no third party
	ChallengeCaptcha = "captcha" // the CAPTCHA provider the server is configured with
)

// Challenge is a sale's human check.
type Challenge struct {
	Kind       string `json:"kind"`                 // ChallengePoW or ChallengeCaptcha
	Difficulty int    `json:"difficulty,omitempty"` // pow: leading zero bits of the puzzle
}

// Bounds of a sale's proof-of-work difficulty, in leading zero bits. At 22
// (4 million hashes expected) a browser already needs several seconds on
// average and some puzzles take close to the puzzle's 2-minute lifetime on
// slow devices; more would lock real shoppers out.
const (
	MinPoWDifficulty = 1
	MaxPoWDifficulty = 22
)

// Check reports what is wrong with a sale's human check; nil is none.
func (c *Challenge) Check() error {
	switch {
	case c == nil:
		return nil
	case c.Kind == ChallengePoW:
		if c.Difficulty < MinPoWDifficulty || c.Difficulty > MaxPoWDifficulty {
			return fmt.Errorf("challenge difficulty %d outside %d..%d", c.Difficulty, MinPoWDifficulty, MaxPoWDifficulty)
		}
	case c.Kind == ChallengeCaptcha:
		if c.Difficulty != 0 {
			return fmt.Errorf("a captcha challenge has no difficulty")
		}
	default:
		return fmt.Errorf("challenge kind %q is not %s or %s", c.Kind, ChallengePoW, ChallengeCaptcha)
	}
	return nil
}

// TokenRequested is a shopper asking for a purchase token.
type TokenRequested struct{}

// PurchaseRequested is a shopper presenting a purchase token to buy one unit.
type PurchaseRequested struct {
	TokenID string `json:"tokenId"`
}

// TokenIssued grants a purchase token. AlreadyIssued marks the answer to a
// shopper who asked again while holding a token: the same token, no new quota.
type TokenIssued struct {
	TokenID       string    `json:"tokenId"`
	IssuedAt      time.Time `json:"issuedAt"`
	ExpiresAt     time.Time `json:"expiresAt"`
	AlreadyIssued bool      `json:"alreadyIssued,omitempty"`
}

// TokenDenied refuses a token request.
type TokenDenied struct {
	Reason string `json:"reason"`
}

// TokenExpired reclaims an unused token whose time ran out: its quota comes
// back.
type TokenExpired struct {
	TokenID   string    `json:"tokenId"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// PurchaseAccepted sells one unit to the token's holder. OrderID is the ID of
// the purchase request.
type PurchaseAccepted struct {
	TokenID string `json:"tokenId"`
	OrderID string `json:"orderId"`
	Units   int64  `json:"units"`
}

// PurchaseRefused refuses a purchase. For ReasonTokenUsed, OrderID is the
// order the token already bought.
type PurchaseRefused struct {
	TokenID string `json:"tokenId"`
	Reason  string `json:"reason"`
	OrderID string `json:"orderId,omitempty"`
}

// SaleUpdateRequested is an operator asking to open or close a sale now.
// Its Shopper is the operator ("operator" for the admin API).
type SaleUpdateRequested struct {
	Action string `json:"action"`
}

// SaleUpdated is the sale's schedule after an operator's request, decided
// at the batch's time.
type SaleUpdated struct {
	OpensAt  time.Time `json:"opensAt"`
	ClosesAt time.Time `json:"closesAt,omitzero"`
}

// OrderAttemptFailed records one failed call to the provider for an order.
// Attempt counts the failures since the order was accepted or last
// requeued, this one included; RetryAt is the earliest next try.
type OrderAttemptFailed struct {
	Attempt int       `json:"attempt"`
	Status  int       `json:"status,omitempty"` // the provider's HTTP status; 0: no answer
	Error   string    `json:"error"`
	RetryAt time.Time `json:"retryAt"`
}

// OrderConfirmed records that the provider accepted an order. Reference is
// the provider's id for it.
type OrderConfirmed struct {
	Reference string `json:"reference"`
	Attempts  int    `json:"attempts"` // calls made since the order was accepted or last requeued, this one included
}

// Reasons an order is given up.
const (
	OrderFailedAttempts = "attempts" // too many failed calls
	OrderFailedDeadline = "deadline" // not confirmed by its deadline
	OrderFailedRejected = "rejected" // the provider refused it for good (a 4xx other than 401, 403, 408, 429)
)

// OrderFailed records that an order was given up and put in the dead-letter
// stream.
type OrderFailed struct {
	Reason   string `json:"reason"`
	Attempts int    `json:"attempts"`
	Error    string `json:"error,omitempty"` // the last failure
}

// OrderRequeued records an operator sending a failed order back to the
// fulfilment worker; the attempts and the deadline start again.
type OrderRequeued struct {
	By string `json:"by"`
}

// RequestBatch is one message on a sale's request subject: the requests a
// front appended together. Their order in the stream is the arrival order.
type RequestBatch struct {
	Requests []Event
}

// Head is a sale's counters after a decision batch. Everything the front
// shows about a sale's progress is derived from it.
type Head struct {
	Version  uint64 `json:"version"`  // batch version; the first batch is 1
	Cursor   uint64 `json:"cursor"`   // stream sequence of the last request message decided
	Stock    int64  `json:"stock"`    //
	Quota    int64  `json:"quota"`    //
	Issued   int64  `json:"issued"`   // tokens issued, re-issues not counted
	Expired  int64  `json:"expired"`  // tokens reclaimed unused
	Redeemed int64  `json:"redeemed"` // tokens redeemed = units sold (one unit per token)
	// The schedule in force, in Unix nanoseconds (ClosesAtNs 0: never
	// closes). It changes only by SaleUpdated; any process learns the
	// current schedule from the sale's last batch.
	OpensAtNs  int64 `json:"opensAtNs"`
	ClosesAtNs int64 `json:"closesAtNs,omitempty"`
}

// Same reports whether two heads agree. A head written before heads
// recorded the schedule (OpensAtNs 0) is compared on everything else.
func (h Head) Same(o Head) bool {
	if h.OpensAtNs == 0 || o.OpensAtNs == 0 {
		h.OpensAtNs, h.ClosesAtNs, o.OpensAtNs, o.ClosesAtNs = 0, 0, 0, 0
	}
	return h == o
}

// StockLeft is the units not yet sold.
func (h Head) StockLeft() int64 { return h.Stock - h.Redeemed }

// QuotaLeft is quota - issued + expired: a redeemed token gives no quota back.
func (h Head) QuotaLeft() int64 { return h.Quota - h.Issued + h.Expired }

// Outstanding is the tokens issued and neither redeemed nor expired.
func (h Head) Outstanding() int64 { return h.Issued - h.Expired - h.Redeemed }

// DecisionBatch is one commit of a sale's writer, appended with the expected
// last sequence of the sale's decision subject so that only the owner's
// commit lands. It holds the decisions in order and the head after them.
type DecisionBatch struct {
	Sale      string    // sale id
	Writer    string    // the writer incarnation that committed it
	DecidedAt time.Time // the one decision time of every event in the batch
	FromSeq   uint64    // first request message sequence decided (0: none)
	Head      Head      // counters after the batch; Head.Cursor is the last request message decided
	Events    []Event   // expiries first, then one decision per request in stream order
}

// Subjects and stream names.
const (
	StreamName       = "FLASHGATE"
	SubjectSalePfx   = "fg.sale."
	SubjectReqPfx    = "fg.req."
	SubjectDecPfx    = "fg.dec."
	SubjectOrdPfx    = "fg.ord." // fg.ord.<sale>.<order>: an order's fulfilment outcomes
	SubjectAll       = "fg.>"
	LeaseBucket      = "FLASHGATE_LEASES"
	OnceBucket       = "FLASHGATE_ONCE"     // single-use values (puzzles, signature nonces), kept OnceTTL
	LimitsBucket     = "FLASHGATE_LIMITS"   // rate-limit policies set by operators, by policy name
	NodesBucket      = "FLASHGATE_NODES"    // live flashgate processes, by node id, kept NodesTTL
	ProviderBucket   = "FLASHGATE_PROVIDER" // the fulfilment provider's shared access token, its renewal lease, budget and ban
	OrdersStream     = "FLASHGATE_ORDERS"   // fulfilment's work queue: one message per accepted order, removed when done
	SubjectWorkPfx   = "fg.work."           // fg.work.<sale>: an order for the fulfilment worker
	DLQStream        = "FLASHGATE_DLQ"      // orders given up, kept until an operator retries or purges them
	SubjectDLQPfx    = "fg.dlq."            // fg.dlq.<sale>.<order>: one dead-lettered order
	SubjectSaleAll   = SubjectSalePfx + "*"
	SubjectDecAll    = SubjectDecPfx + "*"
	SubjectReqAll    = SubjectReqPfx + "*"
	SubjectOrdAll    = SubjectOrdPfx + "*.*"
	maxSaleIDLen     = 64
	saleIDPatternSrc = `^[a-z0-9][a-z0-9_-]{0,63}$` // the rule; ValidSaleID checks it by hand (tested against it)
)

// Lifetimes of the buckets' entries. OnceTTL outlives every single-use
// value's validity: a puzzle's (2 minutes) and a signature's window (±30 s).
const (
	OnceTTL  = 5 * time.Minute
	NodesTTL = 30 * time.Second
)

// ValidSaleID reports whether id may name a sale: 1 to 64 characters of
// lower-case letters, digits, '-' and '_', starting with a letter or digit.
// Such ids are safe as NATS subject tokens.
func ValidSaleID(id string) bool {
	if len(id) == 0 || len(id) > maxSaleIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if ('a' <= c && c <= 'z') || ('0' <= c && c <= '9') || (i > 0 && (c == '_' || c == '-')) {
			continue
		}
		return false
	}
	return true
}

// SaleSubject is where a sale's SaleCreated event lives.
func SaleSubject(sale string) string { return SubjectSalePfx + sale }

// RequestSubject is where a sale's requests are appended.
func RequestSubject(sale string) string { return SubjectReqPfx + sale }

// DecisionSubject is where a sale's writer commits its decision batches.
func DecisionSubject(sale string) string { return SubjectDecPfx + sale }

// OrderSubject is where the fulfilment outcomes of one order live. Orders
// are ULIDs, safe as subject tokens.
func OrderSubject(sale, order string) string { return SubjectOrdPfx + sale + "." + order }

// WorkSubject is where accepted orders of a sale wait for the fulfilment
// worker.
func WorkSubject(sale string) string { return SubjectWorkPfx + sale }

// DLQSubject is where a given-up order is kept.
func DLQSubject(sale, order string) string { return SubjectDLQPfx + sale + "." + order }

// SaleOfSubject returns the sale id of a fg.*.<sale> subject (or of an
// order's fg.ord.<sale>.<order>).
func SaleOfSubject(subject string) (string, error) {
	for _, p := range []string{SubjectSalePfx, SubjectReqPfx, SubjectDecPfx, SubjectOrdPfx} {
		if len(subject) > len(p) && subject[:len(p)] == p {
			sale := subject[len(p):]
			if p == SubjectOrdPfx {
				i := strings.IndexByte(sale, '.')
				if i < 0 || !ValidOrderID(sale[i+1:]) {
					break
				}
				sale = sale[:i]
			}
			if ValidSaleID(sale) {
				return sale, nil
			}
		}
	}
	return "", fmt.Errorf("subject %q names no sale", subject)
}

// ValidOrderID reports whether id may name an order: a ULID in its
// canonical upper-case form (orders are purchase request ids).
func ValidOrderID(id string) bool {
	if len(id) != ulid.EncodedSize {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	_, err := ulid.ParseStrict(id)
	return err == nil
}

// DecisionMsgID is the Nats-Msg-Id of a decision batch: a retried commit of
// the same version by the same writer is dropped by the stream as a
// duplicate. It names the writer, so that another writer's batch of the same
// version is never taken for a duplicate (a replicated stream checks the
// dedup window before the expected sequence) and meets the sequence check.
func DecisionMsgID(sale string, version uint64, writer string) string {
	return fmt.Sprintf("dec:%s:%d:%s", sale, version, writer)
}

// SaleMsgID is the Nats-Msg-Id of a sale's SaleCreated event.
func SaleMsgID(sale string) string { return "sale:" + sale }

// Duration is a time.Duration written as Go duration text ("5m", "1s").
type Duration time.Duration

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}
