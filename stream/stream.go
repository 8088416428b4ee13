// Package stream holds flashgate's JetStream layout: the one stream every
// event lives on, the lease bucket, and the small reads and appends the rest
// of the program shares.
package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/nats-io/nats.go/jetstream"
)

// Config is the layout's tunables.
type Config struct {
	// Replicas of the stream and the buckets: 1 on the embedded server, 3 on
	// a cluster that should survive the loss of a node.
	Replicas int
	// LeaseTTL is how long a writer's lease lives without renewal.
	LeaseTTL time.Duration
}

// DefaultLeaseTTL is the lease TTL when Config leaves it zero.
const DefaultLeaseTTL = 5 * time.Second

// SnapshotBucket is the object store where each sale's writer keeps the
// latest snapshot of the sale's state (one object per sale, named by the
// sale id), so that a new owner need not replay the whole history.
const SnapshotBucket = "FLASHGATE_SNAPSHOTS"

// Ensure creates the stream and the buckets, or checks that they exist
// with a compatible configuration.
func Ensure(ctx context.Context, js jetstream.JetStream, c Config) error {
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        events.StreamName,
		Description: "flashgate: every sale, request and decision",
		Subjects:    []string{events.SubjectSaleAll, events.SubjectReqAll, events.SubjectDecAll, events.SubjectOrdAll},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		Replicas:    c.Replicas,
		Duplicates:  2 * time.Minute,
		MaxMsgSize:  MaxMessageBytes,
	})
	if err != nil {
		return fmt.Errorf("ensure stream %s: %w", events.StreamName, err)
	}
	for _, sc := range []jetstream.StreamConfig{{
		Name:        events.OrdersStream,
		Description: "flashgate: accepted orders waiting for the fulfilment worker",
		Subjects:    []string{events.SubjectWorkPfx + "*"},
		Retention:   jetstream.WorkQueuePolicy,
		Discard:     jetstream.DiscardNew, // full: the intake retries, nothing is lost
		Duplicates:  10 * time.Minute,
		MaxMsgs:     10_000_000,
		MaxBytes:    4 << 30,
	}, {
		Name:              events.DLQStream,
		Description:       "flashgate: orders given up by the fulfilment worker",
		Subjects:          []string{events.SubjectDLQPfx + "*.*"},
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardNew,
		MaxMsgsPerSubject: 1,
		MaxMsgs:           1_000_000,
		MaxBytes:          1 << 30,
	}} {
		sc.Storage, sc.Replicas, sc.MaxMsgSize = jetstream.FileStorage, c.Replicas, 1<<20
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("ensure stream %s: %w", sc.Name, err)
		}
	}
	_, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      events.LeaseBucket,
		Description: "flashgate: which process writes for which sale",
		TTL:         c.LeaseTTL,
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
	})
	if err != nil {
		return fmt.Errorf("ensure bucket %s: %w", events.LeaseBucket, err)
	}
	for _, kc := range []jetstream.KeyValueConfig{
		{Bucket: events.OnceBucket, Description: "flashgate: single-use puzzles and signature nonces already used", TTL: events.OnceTTL},
		{Bucket: events.LimitsBucket, Description: "flashgate: rate-limit policies set by operators", History: 5},
		{Bucket: events.NodesBucket, Description: "flashgate: live processes", TTL: events.NodesTTL},
		{Bucket: events.ProviderBucket, Description: "flashgate: the fulfilment provider's shared token, renewal lease, budget and ban"},
	} {
		kc.Storage, kc.Replicas = jetstream.FileStorage, c.Replicas
		if kc.History == 0 {
			kc.History = 1
		}
		if _, err := js.CreateOrUpdateKeyValue(ctx, kc); err != nil {
			return fmt.Errorf("ensure bucket %s: %w", kc.Bucket, err)
		}
	}
	_, err = js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      SnapshotBucket,
		Description: "flashgate: the latest snapshot of each sale's state (derived: the stream is the truth)",
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
	})
	if err != nil {
		return fmt.Errorf("ensure bucket %s: %w", SnapshotBucket, err)
	}
	return nil
}

// ErrSaleNotFound is returned for a sale that was never created.
var ErrSaleNotFound = errors.New("sale not found")

// ErrSaleExists is returned when creating a sale whose id is taken.
var ErrSaleExists = errors.New("sale already exists")

// Sale reads a sale's configuration event.
func Sale(ctx context.Context, s jetstream.Stream, sale string) (events.Event, uint64, error) {
	m, err := s.GetLastMsgForSubject(ctx, events.SaleSubject(sale))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return events.Event{}, 0, ErrSaleNotFound
	}
	if err != nil {
		return events.Event{}, 0, fmt.Errorf("read sale %s: %w", sale, err)
	}
	e, err := events.DecodeEvent(m.Data)
	if err != nil {
		return events.Event{}, 0, fmt.Errorf("read sale %s: %w", sale, err)
	}
	if e.Type != events.TypeSaleCreated {
		return events.Event{}, 0, fmt.Errorf("read sale %s: %w: found %s", sale, events.ErrMalformed, e.Type)
	}
	return e, m.Sequence, nil
}

// CreateSale appends a SaleCreated event, refusing a sale id already taken.
func CreateSale(ctx context.Context, js jetstream.JetStream, e events.Event) (uint64, error) {
	b, err := events.EncodeEvent(e)
	if err != nil {
		return 0, err
	}
	ack, err := js.Publish(ctx, events.SaleSubject(e.Sale), b,
		jetstream.WithExpectLastSequencePerSubject(0), jetstream.WithMsgID(events.SaleMsgID(e.Sale)))
	if IsWrongLastSequence(err) {
		return 0, ErrSaleExists
	}
	if err != nil {
		return 0, fmt.Errorf("create sale %s: %w", e.Sale, err)
	}
	if ack.Duplicate {
		return 0, ErrSaleExists
	}
	return ack.Sequence, nil
}

// SaleIDs lists the sales that exist, in no particular order.
func SaleIDs(ctx context.Context, s jetstream.Stream) ([]string, error) {
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(events.SubjectSaleAll))
	if err != nil {
		return nil, fmt.Errorf("list sales: %w", err)
	}
	ids := make([]string, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		id, err := events.SaleOfSubject(subj)
		if err != nil {
			continue
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// LastDecision reads the sale's newest decision batch and its sequence. ok is
// false when the sale has no decision yet.
func LastDecision(ctx context.Context, s jetstream.Stream, sale string) (db events.DecisionBatch, seq uint64, ok bool, err error) {
	m, err := s.GetLastMsgForSubject(ctx, events.DecisionSubject(sale))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return events.DecisionBatch{}, 0, false, nil
	}
	if err != nil {
		return events.DecisionBatch{}, 0, false, fmt.Errorf("read head of %s: %w", sale, err)
	}
	db, err = events.DecodeDecisions(m.Data)
	if err != nil {
		return events.DecisionBatch{}, 0, false, fmt.Errorf("read head of %s at %d: %w", sale, m.Sequence, err)
	}
	return db, m.Sequence, true, nil
}

// IsWrongLastSequence reports whether err is JetStream refusing a publish
// whose expected last subject sequence did not match: on a single server
// 10071, on a replicated stream also 10164 for a concurrent write.
func IsWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == 10164
	}
	return false
}

// IsClusterNotReady reports whether err is a NATS cluster that cannot place
// or serve a replicated stream yet: a peer not (or not yet) seen online
// (10005, "no suitable peers for placement, peer offline"), or JetStream
// temporarily unavailable (10008). Both come and go while a cluster starts
// or a node restarts.
func IsClusterNotReady(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == 10005 || apiErr.ErrorCode == 10008
	}
	return false
}

// ReadHeartbeat is the idle heartbeat of every consumer of the streams (a
// writer's requests, a front's decisions, a rebuild, the views, flashgate
// events, the fulfilment intake, worker and order watch): two missed make
// the consumer start over. With the client's default (5 s) that took 10 s:
// when the NATS node holding the consumer was lost, and when a new
// consumer's first pull got no answer at all (seen once in about 40 runs of
// a loaded three-node cluster test, stalling a new owner's rebuild).
const ReadHeartbeat = time.Second

// MaxMessageBytes is the largest message the event stream takes.
const MaxMessageBytes = 4 << 20

// PullBuffer is the option every consumer of the event stream pulls with:
// the client buffers about bytes ahead of its reader, and never less than
// twice the stream's largest message (a pull asks for the room the client
// has, and a message must fit in one).
//
// It bounds bytes only. jetstream.PullMaxMessagesWithBytesLimit, which
// bounds messages too, stalls a consumer: when the last message of a pull
// fills its byte budget to the byte, the server ends the pull without a
// status, while the client, counting messages only, waits for the rest of
// it. It neither pulls again nor hears a heartbeat until two are missed
// (ReadHeartbeat: 2 s) and the consumer starts over. A writer's request
// consumer met that about once in 400 s of a token flood, and every
// shopper of the sale waited 2 s (nats.go v1.55.0, nats-server v2.15.2).
// With bytes only, the client counts what the server counts.
//
// A stall of the client's own remains, whatever the bound: a pull it
// should send while it is still sending the previous one is skipped, and
// if the reader drains everything outstanding meanwhile, nothing asks
// again until the heartbeat. That takes draining half the buffer during
// one pull request; with buffers of MiBs it has not been seen outside a
// test's 20 KB buffer under the race detector.
//
// Messages (the iterator) makes a channel of a million slots (8 MB) in
// this mode, once per read; Consume does not.
func PullBuffer(bytes int) jetstream.PullMaxBytes {
	return pullBuffer(bytes, MaxMessageBytes)
}

func pullBuffer(bytes, largest int) jetstream.PullMaxBytes {
	return jetstream.PullMaxBytes(max(bytes, 2*largest))
}

// LogConsumeErrors is the Consume option that logs what a consumer's
// pull loop meets and handles by itself (a missed heartbeat, a reset
// ordered consumer, a status from the server) at warn: a consumer that
// stalls says so instead of only making its readers wait.
func LogConsumeErrors(log *slog.Logger, consumer string, args ...any) jetstream.PullConsumeOpt {
	return jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		log.Warn("consumer: "+err.Error(), append([]any{"consumer", consumer}, args...)...)
	})
}

// readOnceHeartbeat is Read's heartbeat: a read is short, and a stalled
// one holds up whoever waits for it (a new owner's rebuild of a sale: a
// first pull that got no answer cost a failover test 2 s with
// ReadHeartbeat, in CI), so it starts over after 1 s instead of 2.
const readOnceHeartbeat = 500 * time.Millisecond

// Read calls fn for every message on subject with a sequence in [from, to],
// in order, and returns when it reached to. It reads with an ordered
// consumer, so it survives reconnects and never skips a message.
func Read(ctx context.Context, s jetstream.Stream, subject string, from, to uint64, fn func(*jetstream.RawStreamMsg) error) error {
	if to < from {
		return nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    max(from, 1),
	})
	if err != nil {
		return fmt.Errorf("read %s: %w", subject, err)
	}
	it, err := cons.Messages(PullBuffer(32<<20), jetstream.PullHeartbeat(readOnceHeartbeat))
	if err != nil {
		return fmt.Errorf("read %s: %w", subject, err)
	}
	defer Stop(it)
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return fmt.Errorf("read %s: %w", subject, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("read %s: %w", subject, err)
		}
		seq := meta.Sequence.Stream
		if seq > to {
			return nil
		}
		if err := fn(&jetstream.RawStreamMsg{Subject: m.Subject(), Sequence: seq, Data: m.Data(), Time: meta.Timestamp}); err != nil {
			return err
		}
		if seq == to {
			return nil
		}
	}
}

// StopTimeout bounds Stop: how long a consumer's stop may take before the
// caller moves on.
const StopTimeout = time.Second

// Stop stops a consumer's delivery (a ConsumeContext or MessagesContext),
// waiting at most StopTimeout. An ordered consumer that is resetting while
// NATS is unreachable holds its lock through API calls that each time out
// after seconds; shutdown must not wait for that. The stop completes in the
// background, at the latest when the connection closes.
func Stop(s interface{ Stop() }) {
	done := make(chan struct{})
	go func() {
		s.Stop()
		close(done)
	}()
	t := time.NewTimer(StopTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}
