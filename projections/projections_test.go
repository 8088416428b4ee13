package projections

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/nats-io/nats.go/jetstream"
)

// scenario is a small sale: three shoppers ask for tokens, one is denied,
// one buys, one asks again and lets the token expire.
type scenario struct {
	s                           *sale
	alice, bob, carol, bobAgain events.Event
	bobIssued, buy              events.Event
	last                        uint64
}

func publishScenario(t *testing.T, p pub) scenario {
	t.Helper()
	s := newSale("s1")
	sc := scenario{s: s}
	p.sale(s.created(2))
	sc.alice, sc.bob, sc.carol = s.tokenReq("alice"), s.tokenReq("bob"), s.tokenReq("carol")
	p.requests(s, sc.alice, sc.bob, sc.carol)
	sc.bobIssued = s.issued(sc.bob)
	p.decisions(s.batch(events.Head{Stock: 2, Quota: 2, Issued: 2},
		s.issued(sc.alice), sc.bobIssued, s.denied(sc.carol, events.ReasonQuotaExhausted)))
	sc.buy, sc.bobAgain = s.purchaseReq("alice", sc.alice.ID), s.tokenReq("bob")
	p.requests(s, sc.buy, sc.bobAgain)
	p.decisions(s.batch(events.Head{Stock: 2, Quota: 2, Issued: 2, Redeemed: 1},
		s.accepted(sc.buy), s.reissued(sc.bobAgain, sc.bobIssued)))
	sc.last = p.decisions(s.batch(events.Head{Stock: 2, Quota: 2, Issued: 2, Redeemed: 1, Expired: 1},
		s.expired(sc.bob.ID)))
	return sc
}

func TestReplayBuildsViews(t *testing.T) {
	ctx := context.Background()
	js := startJS(t)
	sc := publishScenario(t, pub{t, js})
	st, _ := openStore(t)

	n, err := Replay(ctx, js, st)
	if err != nil {
		t.Fatal(err)
	}
	if n != 6 {
		t.Errorf("Replay applied %d messages, want 6", n)
	}
	if last, err := st.LastSeq(ctx); err != nil || last != sc.last {
		t.Fatalf("LastSeq = %d, %v; want %d", last, err, sc.last)
	}
	db := st.DB()
	for q, want := range map[string]int{
		`SELECT COUNT(*) FROM sales WHERE id = 's1' AND seq = 1 AND stock = 2 AND quota = 3 AND quota_buffer = 1.5
			AND per_user_limit = 1 AND token_ttl_ms = 300000 AND opens_at = '2030-01-02T11:00:00.001000000Z' AND closes_at = ''`: 1,
		`SELECT COUNT(*) FROM requests`: 5,
		`SELECT COUNT(*) FROM requests WHERE type = 'PurchaseRequested' AND token_id IS NOT NULL AND seq = 4 AND idx = 0`: 1,
		`SELECT COUNT(*) FROM requests WHERE type = 'TokenRequested' AND token_id IS NULL`:                                4,
		`SELECT COUNT(*) FROM batches WHERE sale = 's1'`:                                                                  3,
		`SELECT COUNT(*) FROM batches WHERE version = 3 AND seq = 6 AND cursor = 4 AND expired = 1 AND redeemed = 1`:      1,
		`SELECT COUNT(*) FROM decisions`: 6,
		`SELECT COUNT(*) FROM decisions WHERE type = 'TokenExpired' AND request IS NULL AND shopper = 'bob' AND version = 3`: 1,
		`SELECT COUNT(*) FROM decisions WHERE already_issued = 1`:                                                            1,
		`SELECT COUNT(*) FROM tokens`: 2,
		`SELECT COUNT(*) FROM tokens WHERE shopper = 'alice' AND status = 'redeemed' AND order_id IS NOT NULL AND closed_at IS NOT NULL`: 1,
		`SELECT COUNT(*) FROM tokens WHERE shopper = 'bob' AND status = 'expired' AND order_id IS NULL`:                                  1,
		`SELECT COUNT(*) FROM orders WHERE shopper = 'alice' AND status = 'accepted' AND units = 1`:                                      1,
		`SELECT COUNT(*) FROM audit_trail`: 12,
		`SELECT COUNT(*) FROM anomalies`:   0,
	} {
		if got := count(t, db, q); got != want {
			t.Errorf("%s = %d, want %d", q, got, want)
		}
	}

	// The audit trail holds each event re-encoded, in stream order.
	var body string
	if err := db.QueryRow(`SELECT body FROM audit_trail WHERE seq = 3 AND idx = 2`).Scan(&body); err != nil {
		t.Fatal(err)
	}
	e, err := events.DecodeEvent([]byte(body))
	if err != nil || e.Type != events.TypeTokenDenied || e.Request != sc.carol.ID {
		t.Errorf("audit body decodes to %+v, %v", e, err)
	}

	o, err := st.Order(ctx, sc.buy.ID)
	if err != nil {
		t.Fatal(err)
	}
	if o.Sale != "s1" || o.Shopper != "alice" || o.TokenID != sc.alice.ID || o.Status != StatusAccepted || o.Units != 1 || o.CreatedAt.IsZero() {
		t.Errorf("Order = %+v", o)
	}
	if _, err := st.Order(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Order(nope) err = %v, want ErrNotFound", err)
	}

	r, err := st.Request(ctx, sc.carol.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Decided || r.Type != string(events.TypeTokenRequested) || r.Shopper != "carol" || r.Seq != 2 ||
		!r.ReceivedAt.Equal(sc.carol.Time) || r.Decision.Type != string(events.TypeTokenDenied) ||
		r.Decision.Reason != events.ReasonQuotaExhausted || r.Decision.Version != 1 {
		t.Errorf("Request(carol) = %+v", r)
	}
	r, err = st.Request(ctx, sc.bobAgain.ID)
	if err != nil {
		t.Fatal(err)
	}
	first := sc.bobIssued.Data.(*events.TokenIssued)
	if !r.Decision.AlreadyIssued || r.Decision.TokenID != sc.bob.ID || !r.Decision.IssuedAt.Equal(first.IssuedAt) ||
		!r.Decision.ExpiresAt.Equal(first.ExpiresAt) || r.Decision.Version != 2 {
		t.Errorf("Request(bob again) = %+v", r)
	}
	r, err = st.Request(ctx, sc.buy.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r.Decision.Type != string(events.TypePurchaseAccepted) || r.Decision.OrderID != sc.buy.ID ||
		!r.Decision.ExpiresAt.IsZero() || !r.Decision.IssuedAt.IsZero() {
		t.Errorf("Request(buy) = %+v", r)
	}
	if _, err := st.Request(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Request(nope) err = %v, want ErrNotFound", err)
	}

	// An undecided request.
	p := pub{t, js}
	late := sc.s.tokenReq("dave")
	p.requests(sc.s, late)
	if _, err := Replay(ctx, js, st); err != nil {
		t.Fatal(err)
	}
	r, err = st.Request(ctx, late.ID)
	if err != nil || r.Decided || r.Shopper != "dave" {
		t.Errorf("Request(late) = %+v, %v", r, err)
	}
}

func TestReplayIsIdempotent(t *testing.T) {
	ctx := context.Background()
	js := startJS(t)
	sc := publishScenario(t, pub{t, js})

	full, _ := openStore(t)
	if _, err := Replay(ctx, js, full); err != nil {
		t.Fatal(err)
	}
	want := dump(t, full)
	if n, err := Replay(ctx, js, full); err != nil || n != 0 {
		t.Errorf("second Replay = %d, %v; want 0", n, err)
	}
	if got := dump(t, full); got != want {
		t.Errorf("second Replay changed the views:\n%s\nwant\n%s", got, want)
	}

	// Applying messages again, in overlapping slices, changes nothing.
	msgs := streamMsgs(t, ctx, js, sc.last)
	if err := full.Apply(ctx, msgs[2:]); err != nil {
		t.Fatal(err)
	}
	if err := full.Apply(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, full); got != want {
		t.Errorf("Apply of applied messages changed the views:\n%s\nwant\n%s", got, want)
	}

	// A store that stopped halfway resumes from its stored last seq, across
	// a reopen, and ends with the same rows.
	half, path := openStore(t)
	if err := half.Apply(ctx, msgs[:3]); err != nil {
		t.Fatal(err)
	}
	if err := half.Apply(ctx, msgs[:2]); err != nil { // stale retry of a prefix
		t.Fatal(err)
	}
	if err := half.Close(); err != nil {
		t.Fatal(err)
	}
	half, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	if last, err := half.LastSeq(ctx); err != nil || last != msgs[2].Seq {
		t.Fatalf("LastSeq after reopen = %d, %v; want %d", last, err, msgs[2].Seq)
	}
	if n, err := Replay(ctx, js, half); err != nil || n != len(msgs)-3 {
		t.Errorf("Replay after reopen = %d, %v; want %d", n, err, len(msgs)-3)
	}
	if got := dump(t, half); got != want {
		t.Errorf("resumed store differs:\n%s\nwant\n%s", got, want)
	}
	if n := count(t, half.DB(), `SELECT COUNT(*) FROM migrations`); n != len(migrations) {
		t.Errorf("migrations has %d rows, want %d", n, len(migrations))
	}
}

// streamMsgs reads the stream's messages 1..last.
func streamMsgs(t *testing.T, ctx context.Context, js jetstream.JetStream, last uint64) []Msg {
	t.Helper()
	str, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []Msg
	for seq := uint64(1); seq <= last; seq++ {
		m, err := str.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, Msg{Seq: m.Sequence, Subject: m.Subject, Data: m.Data})
	}
	return msgs
}

func TestAnomalies(t *testing.T) {
	ctx := context.Background()
	js := startJS(t)
	p := pub{t, js}
	s := newSale("s2")
	p.sale(s.created(5))
	a, b := s.tokenReq("alice"), s.tokenReq("bob")
	p.requests(s, a, b)
	garbage := p.raw(events.RequestSubject("s2"), []byte("{not json"))
	p.decisions(s.batch(events.Head{Stock: 5, Quota: 7, Issued: 2}, s.issued(a), s.issued(b)))
	// The same request decided again, in the next batch.
	again := p.decisions(s.batch(events.Head{Stock: 5, Quota: 7, Issued: 2}, s.denied(a, events.ReasonLimitReached)))
	// A purchase presenting a token that was never issued, accepted.
	buy := s.purchaseReq("bob", "01JZZZZZZZZZZZZZZZZZZZZZZZ")
	p.requests(s, buy)
	forged := p.decisions(s.batch(events.Head{Stock: 5, Quota: 7, Issued: 2, Redeemed: 1}, s.accepted(buy)))
	// A decision for a request that is not in the stream.
	ghost := s.tokenReq("ghost")
	unknown := p.decisions(s.batch(events.Head{Stock: 5, Quota: 7, Issued: 2, Redeemed: 1}, s.denied(ghost, events.ReasonSoldOut)))
	// Expiring a token twice.
	p.decisions(s.batch(events.Head{Stock: 5, Quota: 7, Issued: 2, Redeemed: 1, Expired: 1}, s.expired(b.ID)))
	twice := p.decisions(s.batch(events.Head{Stock: 5, Quota: 7, Issued: 2, Redeemed: 1, Expired: 2}, s.expired(b.ID)))
	// A version that repeats.
	s.version--
	dup := p.decisions(s.batch(events.Head{Stock: 5, Quota: 7, Issued: 2, Redeemed: 1, Expired: 2}))
	// Good data after all that is still applied.
	c := s.tokenReq("carol")
	p.requests(s, c)
	reappended := p.requests(s, c) // a client retry outside the dedup window
	last := p.decisions(s.batch(events.Head{Stock: 5, Quota: 7, Issued: 3, Redeemed: 1, Expired: 1}, s.issued(c)))

	st, _ := openStore(t)
	if _, err := Replay(ctx, js, st); err != nil {
		t.Fatal(err)
	}
	if got, err := st.LastSeq(ctx); err != nil || got != last {
		t.Fatalf("LastSeq = %d, %v; want %d", got, err, last)
	}
	got := anomalies(t, st)
	for _, want := range []struct {
		seq  uint64
		text string
	}{
		{garbage, "undecodable request batch"},
		{again, "decided again"},
		{forged, "redeems unknown token"},
		{unknown, "answers unknown request"},
		{twice, "which is expired"},
		{dup, "duplicate batch version 6"},
		{reappended, "appended again"},
	} {
		found := false
		for _, g := range got {
			if strings.HasPrefix(g, itoa(want.seq)+" s2: ") && strings.Contains(g, want.text) {
				found = true
			}
		}
		if !found {
			t.Errorf("no anomaly %q at seq %d in\n%s", want.text, want.seq, strings.Join(got, "\n"))
		}
	}
	if len(got) != 7 {
		t.Errorf("%d anomalies, want 7:\n%s", len(got), strings.Join(got, "\n"))
	}
	r, err := st.Request(ctx, c.ID)
	if err != nil || r.Decision.Type != string(events.TypeTokenIssued) {
		t.Errorf("Request(carol) = %+v, %v", r, err)
	}

	// Transaction boundaries change nothing: one message per Apply gives
	// the same views.
	single, _ := openStore(t)
	for _, m := range streamMsgs(t, ctx, js, last) {
		if err := single.Apply(ctx, []Msg{m}); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := dump(t, single), dump(t, st); got != want {
		t.Errorf("one message per transaction differs:\n%s\nwant\n%s", got, want)
	}
	// The first decision stands; the ledger did not follow the second.
	r, err = st.Request(ctx, a.ID)
	if err != nil || r.Decision.Type != string(events.TypeTokenIssued) {
		t.Errorf("Request(alice) = %+v, %v", r, err)
	}
	if n := count(t, st.DB(), `SELECT COUNT(*) FROM tokens WHERE status = 'outstanding'`); n != 2 {
		t.Errorf("%d outstanding tokens, want 2 (alice, carol)", n)
	}
}

func TestRunFollowsAndStops(t *testing.T) {
	js := startJS(t)
	p := pub{t, js}
	st, _ := openStore(t)

	run := func(ctx context.Context, opts RunOptions) chan error {
		done := make(chan error, 1)
		go func() { done <- Run(ctx, js, st, opts) }()
		return done
	}
	waitSeq := func(want uint64) {
		t.Helper()
		waitFor(t, 10*time.Second, func() error {
			got, err := st.LastSeq(context.Background())
			if err != nil {
				return err
			}
			if got != want {
				return errors.New("last seq " + itoa(got) + ", want " + itoa(want))
			}
			return nil
		})
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := run(ctx, RunOptions{MaxBatch: 4, MaxDelay: 5 * time.Millisecond})
	sc := publishScenario(t, p)
	waitSeq(sc.last)
	// More than MaxBatch in one go, then a partial batch.
	var reqs []events.Event
	for i := range 9 {
		r := sc.s.tokenReq("late" + itoa(uint64(i)))
		reqs = append(reqs, r)
		p.requests(sc.s, r)
	}
	last := p.decisions(sc.s.batch(events.Head{Stock: 2, Quota: 2, Issued: 2, Redeemed: 1, Expired: 1},
		sc.s.denied(reqs[0], events.ReasonSoldOut)))
	waitSeq(last)
	stop(t, cancel, done)

	// Restart from the stored last seq: new messages only, no duplicates.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	notes := make(chan uint64, 100)
	done = run(ctx, RunOptions{OnApplied: func(seq uint64) { notes <- seq }})
	last = p.decisions(sc.s.batch(events.Head{Stock: 2, Quota: 2, Issued: 2, Redeemed: 1, Expired: 1},
		sc.s.denied(reqs[1], events.ReasonSoldOut)))
	select {
	case seq := <-notes:
		if seq != last {
			t.Errorf("first OnApplied after restart: %d, want %d", seq, last)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OnApplied not called")
	}
	stop(t, cancel, done)
	if n := count(t, st.DB(), `SELECT COUNT(*) FROM requests`); n != 5+9 {
		t.Errorf("%d requests, want 14", n)
	}
	if n := count(t, st.DB(), `SELECT COUNT(*) FROM decisions`); n != 6+2 {
		t.Errorf("%d decisions, want 8", n)
	}
	if a := anomalies(t, st); len(a) != 0 {
		t.Errorf("anomalies: %v", a)
	}

	// A fresh replay of the whole stream builds the same views.
	fresh, _ := openStore(t)
	if _, err := Replay(context.Background(), js, fresh); err != nil {
		t.Fatal(err)
	}
	if got, want := dump(t, fresh), dump(t, st); got != want {
		t.Errorf("replay differs from live views:\n%s\nwant\n%s", got, want)
	}
}

// stop cancels a Run and checks that it returns context.Canceled.
func stop(t *testing.T, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run returned %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

func TestApplyRecordsWhatItCannotFold(t *testing.T) {
	ctx := context.Background()
	st, _ := openStore(t)
	s := newSale("s3")
	created, err := events.EncodeEvent(s.created(1))
	if err != nil {
		t.Fatal(err)
	}
	req := s.tokenReq("alice")
	reqs, err := events.EncodeRequests(events.RequestBatch{Requests: []events.Event{req}})
	if err != nil {
		t.Fatal(err)
	}
	s.cursor = 4
	dec, err := events.EncodeDecisions(s.batch(events.Head{Stock: 1, Quota: 1, Issued: 1}, s.issued(req)))
	if err != nil {
		t.Fatal(err)
	}
	msgs := []Msg{
		{Seq: 1, Subject: "fg.other.s3", Data: created},
		{Seq: 2, Subject: events.SaleSubject("s4"), Data: created},
		{Seq: 3, Subject: events.SaleSubject("s3"), Data: reqs},
		{Seq: 4, Subject: events.RequestSubject("s5"), Data: reqs},
		{Seq: 5, Subject: events.DecisionSubject("s3"), Data: dec},
	}
	if err := st.Apply(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(anomalies(t, st), "\n")
	for _, want := range []string{
		`1 : message on unknown subject "fg.other.s3"`,
		`2 s4: event`,                    // names sale "s3"
		`3 s3: undecodable sale message`, // a request batch is no event
		`4 s5: request batch on fg.req.s5 for a sale never created`,
		`4 s5: request ` + req.ID + ` on fg.req.s5 names sale "s3"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("anomalies lack %q:\n%s", want, got)
		}
	}
	// The sale named by the event was created, and the decision folded.
	if n := count(t, st.DB(), `SELECT COUNT(*) FROM tokens WHERE sale = 's3' AND shopper = 'alice'`); n != 1 {
		t.Errorf("%d tokens for alice, want 1", n)
	}

	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Apply(ctx, []Msg{{Seq: 6, Subject: events.SaleSubject("s3"), Data: created}}); err == nil {
		t.Error("Apply on a closed store succeeded")
	}
}
