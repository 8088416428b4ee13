package projections

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/internal/fgtest"
)

// benchWorkload builds the messages of one sale: rounds of 64 token
// requests (48 issued, 16 denied), then 48 purchases (40 accepted, 8
// refused), then the 8 unused tokens expire. It returns the messages and
// how many decisions they hold.
func benchWorkload(tb testing.TB, rounds int) ([]Msg, int) {
	tb.Helper()
	s := newSale("bench")
	var (
		msgs      []Msg
		decisions int
		head      = events.Head{Stock: int64(rounds) * 40, Quota: int64(rounds) * 60}
	)
	add := func(subject string, b []byte, err error) uint64 {
		if err != nil {
			tb.Fatal(err)
		}
		seq := uint64(len(msgs) + 1)
		msgs = append(msgs, Msg{Seq: seq, Subject: subject, Data: b})
		return seq
	}
	reqs := func(evs []events.Event) {
		b, err := events.EncodeRequests(events.RequestBatch{Requests: evs})
		s.cursor = add(events.RequestSubject(s.id), b, err)
	}
	decide := func(evs []events.Event) {
		b, err := events.EncodeDecisions(s.batch(head, evs...))
		add(events.DecisionSubject(s.id), b, err)
		decisions += len(evs)
	}
	b, err := events.EncodeEvent(s.created(head.Stock))
	add(events.SaleSubject(s.id), b, err)
	for r := range rounds {
		asks := make([]events.Event, 64)
		for i := range asks {
			asks[i] = s.tokenReq("shopper-" + strconv.Itoa(r*64+i))
		}
		reqs(asks)
		var dec []events.Event
		for i, a := range asks {
			if i < 48 {
				dec = append(dec, s.issued(a))
			} else {
				dec = append(dec, s.denied(a, events.ReasonQuotaExhausted))
			}
		}
		head.Issued += 48
		decide(dec)
		buys := make([]events.Event, 48)
		for i := range buys {
			buys[i] = s.purchaseReq(asks[i].Shopper, asks[i].ID)
		}
		reqs(buys)
		dec = nil
		for i, p := range buys {
			if i < 40 {
				dec = append(dec, s.accepted(p))
			} else {
				dec = append(dec, s.refused(p, events.ReasonTokenExpired))
			}
		}
		head.Redeemed += 40
		decide(dec)
		dec = nil
		for _, a := range asks[40:48] {
			dec = append(dec, s.expired(a.ID))
		}
		head.Expired += 8
		decide(dec)
	}
	return msgs, decisions
}

// BenchmarkApply applies a sale's messages in transactions of 512 messages
// (Run's default) to an empty store on disk and reports decisions/s; a
// decision here comes with a request, so requests/s is the same figure.
func BenchmarkApply(b *testing.B) { benchApply(b, 512) }

// BenchmarkApplySmall is BenchmarkApply in transactions of one round of
// the workload (5 messages, 120 decisions): what Run applies in its 20ms
// at about 6,000 decisions/s.
func BenchmarkApplySmall(b *testing.B) { benchApply(b, 5) }

func benchApply(b *testing.B, txMsgs int) {
	msgs, decisions := benchWorkload(b, 150) // 18,000 decisions, 751 messages
	ctx := context.Background()
	var (
		elapsed, cpu time.Duration
		runs         int
	)
	for b.Loop() {
		runs++
		b.StopTimer()
		st, _ := openStore(b)
		b.StartTimer()
		start, startCPU := time.Now(), fgtest.CPUTime(b)
		for i := 0; i < len(msgs); i += txMsgs {
			if err := st.Apply(ctx, msgs[i:min(i+txMsgs, len(msgs))]); err != nil {
				b.Fatal(err)
			}
		}
		elapsed += time.Since(start)
		cpu += fgtest.CPUTime(b) - startCPU
		b.StopTimer()
		if a := anomalies(b, st); len(a) != 0 {
			b.Fatalf("anomalies: %v", a[:min(3, len(a))])
		}
		st.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(decisions*runs)/elapsed.Seconds(), "decisions/s")
	b.ReportMetric(float64(decisions*runs)/cpu.Seconds(), "decisions/cpu-s")
}

// BenchmarkReplay is BenchmarkApply's workload read from an embedded NATS
// server: the whole path of the auditor's replay and of Run catching up.
func BenchmarkReplay(b *testing.B) {
	msgs, decisions := benchWorkload(b, 150)
	js := startJS(b)
	ctx := context.Background()
	for _, m := range msgs {
		if _, err := js.Publish(ctx, m.Subject, m.Data); err != nil {
			b.Fatal(err)
		}
	}
	var (
		elapsed, cpu time.Duration
		runs         int
	)
	for b.Loop() {
		runs++
		b.StopTimer()
		st, _ := openStore(b)
		b.StartTimer()
		start, startCPU := time.Now(), fgtest.CPUTime(b)
		n, err := Replay(ctx, js, st)
		if err != nil || n != len(msgs) {
			b.Fatalf("Replay = %d, %v; want %d", n, err, len(msgs))
		}
		elapsed += time.Since(start)
		cpu += fgtest.CPUTime(b) - startCPU
		b.StopTimer()
		st.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(decisions*runs)/elapsed.Seconds(), "decisions/s")
	b.ReportMetric(float64(decisions*runs)/cpu.Seconds(), "decisions/cpu-s")
}
