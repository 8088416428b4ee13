package fulfil

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/stream"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrTooManyWatches is returned by Watch when the process follows its
// maximum of orders already.
var ErrTooManyWatches = errors.New("too many order watches")

// readyWait bounds a watch's wait for the hub to follow the events.
const readyWait = 5 * time.Second

// Hub follows every order's outcome events from now on, with one consumer
// per process, and passes each to whoever watches that order.
type Hub struct {
	js  jetstream.JetStream
	st  jetstream.Stream
	max int
	log *slog.Logger

	ready     chan struct{} // closed once the consumer follows the events
	readyOnce sync.Once

	mu   sync.Mutex
	subs map[string]map[chan State]struct{}
	n    int
}

// NewHub returns a hub allowing at most max watches at once.
func NewHub(js jetstream.JetStream, st jetstream.Stream, max int, log *slog.Logger) *Hub {
	if log == nil {
		log = slog.Default()
	}
	return &Hub{js: js, st: st, max: max, log: log, ready: make(chan struct{}), subs: make(map[string]map[chan State]struct{})}
}

// Run follows the outcome events until ctx ends.
func (h *Hub) Run(ctx context.Context) error {
	cons, err := h.st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SubjectOrdAll},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return fmt.Errorf("order watch: %w", err)
	}
	cc, err := cons.Consume(h.handle, jetstream.PullHeartbeat(stream.ReadHeartbeat))
	if err != nil {
		return fmt.Errorf("order watch: %w", err)
	}
	h.readyOnce.Do(func() { close(h.ready) })
	<-ctx.Done()
	stream.Stop(cc)
	return ctx.Err()
}

func (h *Hub) handle(m jetstream.Msg) {
	e, err := events.DecodeEvent(m.Data())
	if err != nil || !e.Type.IsOrder() {
		return // the audit reports it
	}
	md, err := m.Metadata()
	if err != nil {
		return
	}
	s := StateOf(&e, md.Sequence.Stream)
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs[e.Request] {
		// The newest state replaces one not yet taken.
		select {
		case <-ch:
		default:
		}
		ch <- s
	}
}

// Watch returns the order's state now and a channel of its later states
// (a state may be skipped for a newer one; ignore any whose Seq is not past
// the last seen). Call stop when done.
func (h *Hub) Watch(ctx context.Context, sale, order string) (now State, changes <-chan State, stop func(), err error) {
	// The consumer delivers only events after it began: a watch before
	// that would miss the changes between its read and the consumer's start.
	wait := time.NewTimer(readyWait)
	defer wait.Stop()
	select {
	case <-h.ready:
	case <-wait.C:
		return State{}, nil, nil, errors.New("order watch: not following the events yet")
	case <-ctx.Done():
		return State{}, nil, nil, ctx.Err()
	}
	ch := make(chan State, 1)
	h.mu.Lock()
	if h.n >= h.max {
		h.mu.Unlock()
		return State{}, nil, nil, ErrTooManyWatches
	}
	if h.subs[order] == nil {
		h.subs[order] = make(map[chan State]struct{})
	}
	h.subs[order][ch] = struct{}{}
	h.n++
	h.mu.Unlock()
	stop = func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if _, ok := h.subs[order][ch]; !ok {
			return
		}
		delete(h.subs[order], ch)
		if len(h.subs[order]) == 0 {
			delete(h.subs, order)
		}
		h.n--
	}
	// Subscribed first, read second: nothing falls between.
	if now, err = ReadState(ctx, h.st, sale, order); err != nil {
		stop()
		return State{}, nil, nil, err
	}
	return now, ch, stop, nil
}

// Watches is the number of watches open.
func (h *Hub) Watches() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}
