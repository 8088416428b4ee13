package eventlog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/stream"
	"github.com/nats-io/nats.go/jetstream"
)

// Options choose the events a Reader yields, where it starts and where it
// stops.
//
// Start: at most one of FromSeq, Since, Last and New; none means the
// beginning of the stream. End: without Follow, the last message stored when
// Read began (or ToSeq, if earlier); with Follow, ToSeq or never.
type Options struct {
	// Sale keeps the events of one sale. The stream filters on the server
	// (fg.*.<sale>).
	Sale string
	// Types keeps events of these types. The server is asked only for the
	// subjects that can hold them (SaleCreated: fg.sale.*, requests:
	// fg.req.*, decisions: fg.dec.*, orders' outcomes: fg.ord.*.*). A
	// message that does not decode is always yielded, whatever the types, if
	// its subject is read.
	Types []events.Type

	// FromSeq starts at this stream sequence.
	FromSeq uint64
	// Since starts at the first message stored at or after Since (the time
	// the stream stored the message, not the time in the event).
	Since time.Time
	// Last starts with the last Last selected events stored when Read began.
	Last int
	// New starts after the last message stored when Read began: only events
	// stored from then on.
	New bool

	// ToSeq stops after this stream sequence (0: no bound).
	ToSeq uint64
	// Follow keeps waiting for new messages until the context ends.
	Follow bool

	// BatchBytes bounds what the client buffers ahead (default 16 MiB,
	// and at least twice the stream's largest message; see
	// stream.PullBuffer).
	BatchBytes int
}

// Stats counts what a Reader yielded.
type Stats struct {
	Events      int    // records yielded, undecodable ones included
	Undecodable int    // records for messages that did not decode
	Messages    int    // messages that yielded at least one record
	Sales       int    // distinct sales among the records
	FirstSeq    uint64 // sequence of the first record yielded (0: none)
	LastSeq     uint64 // sequence of the last record yielded
}

// Writer receives a Reader's records. The Reader calls Flush whenever it has
// caught up with the stream (nothing more stored for now) and when it ends.
type Writer interface {
	Write(Record) error
	Flush() error
}

// Reader yields the events selected by Options from a stream, in stream
// order, each with its position. It reads with ordered consumers, so it
// survives reconnects and never skips a message, and it keeps at most
// BatchBytes of messages in memory.
type Reader struct {
	s        jetstream.Stream
	o        Options
	subjects []string
	all      bool // the subjects are every subject of the stream: read it unfiltered
	types    map[events.Type]bool
	stats    Stats
	sales    map[string]bool
}

// NewReader checks o and returns a Reader of s.
func NewReader(s jetstream.Stream, o Options) (*Reader, error) {
	starts := 0
	for _, set := range []bool{o.FromSeq > 0, !o.Since.IsZero(), o.Last != 0, o.New} {
		if set {
			starts++
		}
	}
	if starts > 1 {
		return nil, errors.New("choose one start: from sequence, since, last or new")
	}
	if o.Last < 0 {
		return nil, fmt.Errorf("last %d: must be positive", o.Last)
	}
	if o.Sale != "" && !events.ValidSaleID(o.Sale) {
		return nil, fmt.Errorf("invalid sale id %q", o.Sale)
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = 16 << 20
	}
	if info := s.CachedInfo(); info != nil && info.Config.MaxMsgSize > 0 {
		o.BatchBytes = max(o.BatchBytes, 2*int(info.Config.MaxMsgSize))
	}
	r := &Reader{s: s, o: o, sales: map[string]bool{}}
	var sale, req, dec, ord bool
	if len(o.Types) == 0 {
		sale, req, dec, ord = true, true, true, true
	} else {
		r.types = map[events.Type]bool{}
		for _, t := range o.Types {
			switch {
			case t == TypeUndecodable:
				sale, req, dec, ord = true, true, true, true
			case t == events.TypeSaleCreated:
				sale = true
			case t.IsRequest():
				req = true
			case t.IsOrder():
				ord = true
			case slices.Contains(Types, t):
				dec = true
			default:
				return nil, fmt.Errorf("unknown event type %q", t)
			}
			r.types[t] = true
		}
	}
	tok := o.Sale
	if tok == "" {
		tok = "*"
	}
	if sale {
		r.subjects = append(r.subjects, events.SubjectSalePfx+tok)
	}
	if req {
		r.subjects = append(r.subjects, events.SubjectReqPfx+tok)
	}
	if dec {
		r.subjects = append(r.subjects, events.SubjectDecPfx+tok)
	}
	if ord {
		r.subjects = append(r.subjects, events.SubjectOrdPfx+tok+".*")
	}
	// Every subject of every sale: no filter, which selects the same
	// messages. With several filters the server would walk every subject of
	// a message block for each message it looks up, and each order has a
	// subject of its own.
	r.all = tok == "*" && sale && req && dec && ord
	return r, nil
}

// Subjects is what the Reader asks the server for.
func (r *Reader) Subjects() []string { return slices.Clone(r.subjects) }

// Stats counts the records yielded so far.
func (r *Reader) Stats() Stats { return r.stats }

// selected reports whether rec passes the type filter.
func (r *Reader) selected(rec Record) bool {
	return r.types == nil || rec.Err != nil || r.types[rec.Event.Type]
}

// Read writes the selected records to w in stream order. Without Follow it
// returns nil once it reached its end; with Follow it returns ctx.Err() when
// ctx ends. An error of w stops it and is returned.
func (r *Reader) Read(ctx context.Context, w Writer) error {
	info, err := r.s.Info(ctx)
	if err != nil {
		return fmt.Errorf("read %s: %w", events.StreamName, err)
	}
	first, last := max(info.State.FirstSeq, 1), info.State.LastSeq
	var (
		start = first
		since time.Time
		skip  int
	)
	switch {
	case r.o.FromSeq > 0:
		start = r.o.FromSeq
	case !r.o.Since.IsZero():
		since = r.o.Since
	case r.o.Last > 0:
		if start, skip, err = r.lastStart(ctx, first, last); err != nil {
			return err
		}
	case r.o.New:
		start = last + 1
	}
	end := scanEnd{}
	if !r.o.Follow {
		end = scanEnd{bounded: true, to: last, whenCaughtUp: true}
	}
	if r.o.ToSeq > 0 && (!end.bounded || r.o.ToSeq < end.to) {
		end.bounded, end.to = true, r.o.ToSeq
	}
	err = r.scan(ctx, start, since, end, func(m *jetstream.RawStreamMsg, pending uint64) error {
		yielded := false
		for _, rec := range Flatten(m) {
			if !r.selected(rec) {
				continue
			}
			if skip > 0 {
				skip--
				continue
			}
			if err := w.Write(rec); err != nil {
				return err
			}
			r.count(rec)
			yielded = true
		}
		if yielded {
			r.stats.Messages++
		}
		if pending == 0 {
			return w.Flush()
		}
		return nil
	})
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	return err
}

func (r *Reader) count(rec Record) {
	r.stats.Events++
	if rec.Err != nil {
		r.stats.Undecodable++
	}
	if r.stats.FirstSeq == 0 {
		r.stats.FirstSeq = rec.Seq
	}
	r.stats.LastSeq = rec.Seq
	if s := rec.Sale(); s != "" && !r.sales[s] {
		r.sales[s] = true
		r.stats.Sales++
	}
}

// lastStart finds where the last Options.Last selected events among the
// messages up to last begin: the message's sequence and how many selected
// events of that message come before them. It reads backwards in windows
// of doubling width, each read forwards, keeping only a count per message.
func (r *Reader) lastStart(ctx context.Context, first, last uint64) (uint64, int, error) {
	type hit struct {
		seq uint64
		n   int
	}
	need := r.o.Last
	width := uint64(max(need, 64))
	for hi := last; hi >= first; {
		lo := first
		if hi-first >= width {
			lo = hi - width + 1
		}
		var hits []hit // newest messages of the window with selected events, summing to at least need when they can
		sum := 0
		err := r.scan(ctx, lo, time.Time{}, scanEnd{bounded: true, to: hi, whenCaughtUp: true},
			func(m *jetstream.RawStreamMsg, _ uint64) error {
				n := 0
				for _, rec := range Flatten(m) {
					if r.selected(rec) {
						n++
					}
				}
				if n == 0 {
					return nil
				}
				hits = append(hits, hit{m.Sequence, n})
				sum += n
				for len(hits) > 1 && sum-hits[0].n >= need {
					sum -= hits[0].n
					hits = hits[1:]
				}
				return nil
			})
		if err != nil {
			return 0, 0, err
		}
		if sum >= need {
			return hits[0].seq, sum - need, nil
		}
		need -= sum
		if lo == first {
			break
		}
		hi = lo - 1
		width = min(2*width, 1<<40)
	}
	return first, 0, nil
}

// scanEnd is where a scan stops: after sequence to (when bounded), and, with
// whenCaughtUp, as soon as the consumer has nothing more pending (so that a
// bound whose message is not selected, or was removed, still ends).
type scanEnd struct {
	bounded      bool
	to           uint64
	whenCaughtUp bool
}

// scan calls fn for every message on the Reader's subjects from start (or
// from since, when not zero) in order, with the number of messages pending
// after it, until end.
func (r *Reader) scan(ctx context.Context, start uint64, since time.Time, end scanEnd,
	fn func(m *jetstream.RawStreamMsg, pending uint64) error) error {
	if end.bounded && since.IsZero() && start > end.to {
		return nil
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: r.subjects}
	if r.all {
		cfg.FilterSubjects = nil
	}
	if since.IsZero() {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = max(start, 1)
	} else {
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &since
	}
	cons, err := r.s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("read %v: %w", r.subjects, err)
	}
	if end.whenCaughtUp {
		if ci := cons.CachedInfo(); ci != nil && ci.NumPending == 0 {
			return nil
		}
	}
	it, err := cons.Messages(stream.PullBuffer(r.o.BatchBytes), jetstream.PullHeartbeat(stream.ReadHeartbeat))
	if err != nil {
		return fmt.Errorf("read %v: %w", r.subjects, err)
	}
	defer stream.Stop(it)
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("read %v: %w", r.subjects, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("read %v: %w", r.subjects, err)
		}
		seq := meta.Sequence.Stream
		if end.bounded && seq > end.to {
			return nil
		}
		raw := &jetstream.RawStreamMsg{Subject: m.Subject(), Sequence: seq, Header: m.Headers(), Data: m.Data(), Time: meta.Timestamp}
		if err := fn(raw, meta.NumPending); err != nil {
			return err
		}
		if end.bounded && seq == end.to || end.whenCaughtUp && meta.NumPending == 0 {
			return nil
		}
	}
}
