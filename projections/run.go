package projections

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/stream"
	"github.com/nats-io/nats.go/jetstream"
)

// RunOptions tunes Run. The zero value works.
type RunOptions struct {
	// MaxBatch is the most messages applied in one transaction. Zero: 512.
	MaxBatch int
	// MaxDelay is how long a partial batch waits for more messages before
	// it is applied. Zero: 20ms.
	MaxDelay time.Duration
	// OnApplied, if set, is called after each transaction with the stream
	// sequence of the last message applied.
	OnApplied func(lastSeq uint64)
	// Pace, if set, is called after each transaction with the time it
	// took, before the next one starts: a serving process uses it to keep
	// the views from taking the CPU its shoppers need (the views then lag,
	// and catch up when the flood is over). Run waits while it runs.
	Pace func(ctx context.Context, took time.Duration)
}

// replayBatch is the transaction size of Replay.
const replayBatch = 1024

// Memory bounds: the bytes the client buffers ahead of the fold (see
// stream.PullBuffer; well under the client's 64 MiB pending limit of a
// subscription, past which it drops messages), and the bytes of messages
// one transaction holds.
const (
	prefetchBytes = 16 << 20
	batchBytes    = 16 << 20
)

// follow opens an ordered consumer on the stream from seq on. The ordered
// consumer recreates itself after a reconnect or a delivery gap and resumes
// after the last message handed out.
//
// It has no subject filter: the views fold every subject the stream has
// (sales, requests, decisions, orders; see stream.Ensure). A filter naming
// those subjects would select the same messages, but the server finds the
// next message of a multi-subject filter by walking the subjects of the
// message block when the consumer is behind, and every order has a subject
// of its own: during a purchase flood that walk took a quarter of the
// process's CPU while the views lagged.
func follow(ctx context.Context, js jetstream.JetStream, seq uint64, prefetch int) (jetstream.Consumer, *feed, error) {
	cons, err := js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   seq,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("follow %s from %d: %w", events.StreamName, seq, err)
	}
	f := &feed{ch: make(chan jetstream.Msg, prefetch), done: make(chan struct{})}
	f.cc, err = cons.Consume(f.put, stream.PullBuffer(prefetchBytes), jetstream.PullHeartbeat(stream.ReadHeartbeat))
	if err != nil {
		return nil, nil, fmt.Errorf("follow %s from %d: %w", events.StreamName, seq, err)
	}
	return cons, f, nil
}

// feed hands a consumer's messages over through a channel of its own. The
// views read it at their own pace (they pause to leave the CPU to shoppers,
// and a transaction takes a while): a jetstream.MessagesContext would hold
// them in the client subscription's channel, which, once full, drops the
// consumer's next heartbeat as a slow consumer, and the ordered consumer then
// starts over: a stall of seconds for every consumer of the connection.
// Here a full channel (prefetch messages) only holds the delivery back, and
// the pull requests keep the messages buffered behind it within
// prefetchBytes.
type feed struct {
	ch   chan jetstream.Msg
	done chan struct{}
	once sync.Once
	cc   jetstream.ConsumeContext
}

func (f *feed) put(m jetstream.Msg) {
	select {
	case f.ch <- m:
	case <-f.done:
	}
}

// Next returns the next message, waiting until ctx ends.
func (f *feed) Next(ctx context.Context) (jetstream.Msg, error) {
	select {
	case m := <-f.ch:
		return m, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-f.done:
		return nil, jetstream.ErrMsgIteratorClosed
	}
}

// Stop ends the delivery.
func (f *feed) Stop() {
	f.once.Do(func() { close(f.done) })
	f.cc.Stop()
}

func toMsg(m jetstream.Msg) (Msg, *jetstream.MsgMetadata, error) {
	md, err := m.Metadata()
	if err != nil {
		return Msg{}, nil, fmt.Errorf("stream message metadata: %w", err)
	}
	return Msg{Seq: md.Sequence.Stream, Subject: m.Subject(), Data: m.Data()}, md, nil
}

// Run follows the stream from LastSeq+1 and applies messages until ctx
// ends; it returns ctx.Err() on cancel. Messages are applied in
// transactions of up to MaxBatch messages (and 16 MiB); a partial batch is
// applied once its first message has waited MaxDelay. Messages received but
// not yet applied when ctx ends are left for the next Run.
func Run(ctx context.Context, js jetstream.JetStream, s *Store, opts RunOptions) error {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 512
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = 20 * time.Millisecond
	}
	last, err := s.LastSeq(ctx)
	if err != nil {
		return stopped(ctx, err)
	}
	_, it, err := follow(ctx, js, last+1, 2*opts.MaxBatch)
	if err != nil {
		return stopped(ctx, err)
	}
	defer stream.Stop(it)
	batch := make([]Msg, 0, opts.MaxBatch)
	for {
		// Wait as long as it takes for the first message of a batch, then
		// at most MaxDelay for the rest.
		m, err := it.Next(ctx)
		if err != nil {
			return stopped(ctx, fmt.Errorf("projections: next message: %w", err))
		}
		msg, _, err := toMsg(m)
		if err != nil {
			return stopped(ctx, err)
		}
		batch = append(batch[:0], msg)
		size := len(msg.Data)
		fill, cancel := context.WithTimeout(ctx, opts.MaxDelay)
		for len(batch) < opts.MaxBatch && size < batchBytes {
			m, err := it.Next(fill)
			if err != nil {
				if fill.Err() != nil && ctx.Err() == nil {
					break // MaxDelay is up
				}
				cancel()
				return stopped(ctx, fmt.Errorf("projections: next message: %w", err))
			}
			msg, _, err := toMsg(m)
			if err != nil {
				cancel()
				return stopped(ctx, err)
			}
			batch = append(batch, msg)
			size += len(msg.Data)
		}
		cancel()
		start := time.Now()
		if err := s.Apply(ctx, batch); err != nil {
			return stopped(ctx, err)
		}
		if opts.OnApplied != nil {
			opts.OnApplied(batch[len(batch)-1].Seq)
		}
		clear(batch)
		if opts.Pace != nil {
			opts.Pace(ctx, time.Since(start))
		}
	}
}

// stopped is ctx.Err() once ctx has ended, whatever err it ended with, and
// err otherwise.
func stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Replay applies every message of the stream from LastSeq+1 up to the
// stream's last sequence at call time, then returns how many it applied.
// It works on a stopped or a running installation; messages appended after
// the call are left for the next Replay or Run.
func Replay(ctx context.Context, js jetstream.JetStream, s *Store) (applied int, err error) {
	str, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		return 0, fmt.Errorf("replay: %w", err)
	}
	info, err := str.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("replay: %w", err)
	}
	end := info.State.LastSeq
	last, err := s.LastSeq(ctx)
	if err != nil {
		return 0, fmt.Errorf("replay: %w", err)
	}
	if end <= last {
		return 0, nil
	}
	cons, it, err := follow(ctx, js, last+1, replayBatch)
	if err != nil {
		return 0, fmt.Errorf("replay: %w", err)
	}
	defer stream.Stop(it)
	if ci := cons.CachedInfo(); ci != nil && ci.NumPending == 0 {
		return 0, nil // nothing left
	}
	batch, size := make([]Msg, 0, replayBatch), 0
	flush := func() error {
		if err := s.Apply(ctx, batch); err != nil {
			return err
		}
		applied += len(batch)
		clear(batch)
		batch, size = batch[:0], 0
		return nil
	}
	for {
		m, err := it.Next(ctx)
		if err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				err = ctx.Err()
			}
			return applied, fmt.Errorf("replay: next message: %w", err)
		}
		msg, md, err := toMsg(m)
		if err != nil {
			return applied, fmt.Errorf("replay: %w", err)
		}
		if msg.Seq > end {
			break // appended after the call
		}
		batch = append(batch, msg)
		size += len(msg.Data)
		// NumPending 0: the messages up to end that are left were deleted.
		done := msg.Seq == end || md.NumPending == 0
		if len(batch) == replayBatch || size >= batchBytes || done {
			if err := flush(); err != nil {
				return applied, fmt.Errorf("replay: %w", err)
			}
		}
		if done {
			return applied, nil
		}
	}
	if err := flush(); err != nil {
		return applied, fmt.Errorf("replay: %w", err)
	}
	return applied, nil
}
