package handlers

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/internal/wait"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Manager runs the writers of the sales this process owns. For every sale
// it knows it competes for the sale's lease in the lease bucket; holding the
// lease it runs the sale's writer and renews the lease; losing it, it stops
// the writer. The lease spreads sales and keeps idle processes out of the
// way; safety does not rest on it: a writer whose lease lapsed has its
// commit refused by the stream.
type Manager struct {
	js     jetstream.JetStream
	st     jetstream.Stream
	leases jetstream.KeyValue
	node   string
	ttl    time.Duration
	cfg    WriterConfig
	log    *slog.Logger

	mu      sync.Mutex
	ctx     context.Context
	sales   map[string]bool
	failing map[string]error // sales whose writer stopped with an error and has not committed since
	owned   map[string]bool  // sales whose lease this process holds
	idle    map[string]bool  // owned sales whose writer retired idle (no state held)
	wg      sync.WaitGroup
	stopped bool
	peers   func() []string // the other live processes' node ids (this one's is ignored); nil: none known
	holding atomic.Int32    // sales whose free lease this process is leaving to another

	lookEvery time.Duration // how often a sleeping sale's requests are looked for in the stream (about; default 30 s)
	noListen  bool          // tests: a sleeping sale has no subscription, only the looks
}

// SpreadOver makes the manager hold back, for at most one lease TTL, from
// the free lease of a sale it has not competed for before (a new sale, or
// any sale just after this process started) while another live process
// (peers names them) holds fewer leases: that process takes it first, and
// new sales spread over the processes. The counts are read from the lease
// bucket itself, not from heartbeats, so they are current. A lease that
// lapses later (its owner died) is taken at once: holding back there would
// add a TTL to every failover. Sales already owned are not handed over.
func (m *Manager) SpreadOver(peers func() []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.peers = peers
}

// overShare reports whether another live process holds fewer leases than
// this one and should take a free lease first.
func (m *Manager) overShare(ctx context.Context) bool {
	m.mu.Lock()
	peers := m.peers
	m.mu.Unlock()
	if peers == nil {
		return false
	}
	var others []string // peers() may be shared: not filtered in place
	for _, n := range peers() {
		if n != m.node {
			others = append(others, n)
		}
	}
	if len(others) == 0 {
		return false // nobody to leave it to: no need to count
	}
	held, err := m.leaseCounts(ctx)
	if err != nil {
		return false // no figures: take it; the race for the lease stays safe
	}
	for _, n := range others {
		if held[n] < held[m.node] {
			return true
		}
	}
	return false
}

// leaseCounts reads how many leases each process holds.
func (m *Manager) leaseCounts(ctx context.Context) (map[string]int, error) {
	ctx, cancel := context.WithTimeout(ctx, m.ttl)
	defer cancel()
	w, err := m.leases.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer func() { _ = w.Stop() }()
	held := map[string]int{}
	for {
		select {
		case e := <-w.Updates():
			if e == nil { // the current values are all in
				return held, nil
			}
			held[string(e.Value())]++
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// NewManager returns a manager for the process node. node must be stable
// across restarts of the same installation (it is kept in the data
// directory): a restarted process takes back its own leases at once instead
// of waiting for them to lapse. ttl is the lease bucket's TTL.
func NewManager(js jetstream.JetStream, st jetstream.Stream, leases jetstream.KeyValue, node string, ttl time.Duration, cfg WriterConfig) *Manager {
	cfg.defaults()
	m := &Manager{js: js, st: st, leases: leases, node: node, ttl: ttl, cfg: cfg, log: cfg.Log,
		sales: make(map[string]bool), failing: make(map[string]error), owned: make(map[string]bool), idle: make(map[string]bool),
		lookEvery: 30 * time.Second}
	onCommit := cfg.OnCommit
	m.cfg.OnCommit = func(db *events.DecisionBatch, requests int, took time.Duration) {
		m.setFailing(db.Sale, nil)
		if onCommit != nil {
			onCommit(db, requests, took)
		}
	}
	return m
}

// Start makes the manager run writers under ctx. Cancel ctx, then Wait.
func (m *Manager) Start(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ctx = ctx
	for sale := range m.sales {
		m.launch(sale)
	}
}

// Add makes the manager compete for sale. Adding a sale twice is harmless.
func (m *Manager) Add(sale string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sales[sale] || m.stopped {
		return
	}
	m.sales[sale] = true
	if m.ctx != nil {
		m.launch(sale)
	}
}

func (m *Manager) setFailing(sale string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err == nil {
		delete(m.failing, sale)
	} else {
		m.failing[sale] = err
	}
}

func (m *Manager) setOwned(sale string, owned bool) { m.mark(m.owned, sale, owned) }

func (m *Manager) setIdle(sale string, idle bool) { m.mark(m.idle, sale, idle) }

// mark puts sale in set (one of the manager's sets) or takes it out.
func (m *Manager) mark(set map[string]bool, sale string, in bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if in {
		set[sale] = true
	} else {
		delete(set, sale)
	}
}

// Status reports the sales this process writes for and the ones whose
// writer failed and has not committed since (readiness reads it).
func (m *Manager) Status() (owned []string, failing map[string]string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	failing = make(map[string]string, len(m.failing))
	for s, err := range m.failing {
		failing[s] = err.Error()
	}
	for s := range m.owned {
		owned = append(owned, s)
	}
	return owned, failing
}

// Asleep reports the sales this process holds the lease of whose writer
// retired idle (WriterConfig.IdleAfter): their state is not in memory.
func (m *Manager) Asleep() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.idle))
	for s := range m.idle {
		out = append(out, s)
	}
	return out
}

// Wait blocks until every writer has stopped after ctx ended.
func (m *Manager) Wait() {
	m.mu.Lock()
	m.stopped = true
	m.mu.Unlock()
	m.wg.Wait()
}

func (m *Manager) launch(sale string) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.own(m.ctx, sale)
	}()
}

// own loops: take the lease, run the writer while it is held, repeat.
func (m *Manager) own(ctx context.Context, sale string) {
	retry := m.ttl / 4
	backoff := 50 * time.Millisecond // after a writer failure; doubles to 5 s
	for first := true; ctx.Err() == nil; first = false {
		if first && m.leaseFree(ctx, sale) && m.overShare(ctx) {
			m.holdBack(ctx, sale, retry)
		}
		rev, err := m.acquire(ctx, sale)
		if errors.Is(err, errLeaseHeld) {
			m.setFailing(sale, nil) // another process writes it: nothing of ours fails
		}
		if err != nil {
			if !errors.Is(err, errLeaseHeld) && ctx.Err() == nil {
				m.log.Warn("lease not acquired", "sale", sale, "err", err)
			}
			wait.Sleep(ctx, retry)
			continue
		}
		wctx, cancel := context.WithCancel(ctx)
		renewed := make(chan struct{})
		go func() {
			defer close(renewed)
			m.renew(wctx, cancel, sale, rev)
		}()
		m.setOwned(sale, true)
		err = m.write(wctx, sale)
		m.setOwned(sale, false)
		stopped := wctx.Err() != nil // lease lost or shutting down, before our own cancel
		cancel()
		<-renewed
		// Losing the sale, or stopping, is no failure: only a writer that
		// cannot run is (readiness reads this).
		if err != nil && !errors.Is(err, ErrNotOwner) && !stopped {
			m.setFailing(sale, err)
		} else {
			m.setFailing(sale, nil)
		}
		if ctx.Err() != nil {
			m.release(sale)
			return
		}
		if err != nil {
			// ErrNotOwner while we hold the lease: the previous owner has not
			// noticed yet that its lease is gone (it will when its renewal
			// fails, within TTL/3). Keep the lease and try again; releasing
			// it here would hand the sale back to that zombie.
			m.log.Warn("writer stopped", "sale", sale, "err", err, "retry in", backoff)
			wait.Sleep(ctx, backoff)
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
	}
}

var errLeaseHeld = errors.New("lease held by another process")

// write runs the sale's writer while ctx lasts. A writer that retires idle
// (WriterConfig.IdleAfter) is dropped, state and all, while the lease is
// kept; a new one starts when a request for the sale comes or when the sale
// next needs a batch (a token expires, the waiting room's next step).
func (m *Manager) write(ctx context.Context, sale string) error {
	for {
		cfg := m.cfg
		cfg.ID = m.node + "/" + time.Now().UTC().Format("20060102T150405.000000000")
		w := NewWriter(m.js, m.st, sale, cfg)
		err := w.Run(ctx)
		if !errors.Is(err, ErrIdle) {
			return err
		}
		// The writer loaded the sale and ran: whatever failed before is over.
		m.setFailing(sale, nil)
		cursor, wake, ok := w.Idle()
		w = nil // the state goes with it
		m.setIdle(sale, true)
		m.sleep(ctx, sale, cursor, wake, ok)
		m.setIdle(sale, false)
		if ctx.Err() != nil {
			return nil
		}
		m.log.Info("writer woken", "sale", sale)
	}
}

// sleep waits until a request for sale after cursor is in the stream, the
// time wake (if ok) comes, or ctx ends. A request is noticed at once
// through a subscription to the sale's request subject. The stream is also
// looked at, for a request the subscription cannot have seen: at once (one
// stored while the writer retired), a second later (one published just
// before the subscription was in place, or through another server of a
// cluster before the subscription reached it), whenever the connection is
// made again (core messages are lost while it is down), and every
// lookEvery (about 30 s, jittered) in case anything else was missed. A look
// that fails is made again at the next.
func (m *Manager) sleep(ctx context.Context, sale string, cursor uint64, wake time.Time, ok bool) {
	came := make(chan struct{}, 1)
	nc := m.js.Conn()
	if !m.noListen {
		sub, err := nc.Subscribe(events.RequestSubject(sale), func(*nats.Msg) {
			select {
			case came <- struct{}{}:
			default:
			}
		})
		if err == nil {
			defer func() { _ = sub.Unsubscribe() }()
			fctx, cancel := context.WithTimeout(ctx, time.Second)
			_ = nc.FlushWithContext(fctx) // the looks cover a subscription not yet in place
			cancel()
		} else {
			m.log.Warn("sale asleep without a subscription to its requests: they are looked for in the stream only", "sale", sale, "err", err)
		}
	}
	reconnected := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(reconnected)
	var at <-chan time.Time
	if ok {
		t := time.NewTimer(max(wake.Sub(m.cfg.Now()), 0))
		defer t.Stop()
		at = t.C
	}
	look := time.NewTimer(min(time.Second, m.lookEvery))
	defer look.Stop()
	warned := false
	for {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		last, err := m.st.GetLastMsgForSubject(lctx, events.RequestSubject(sale))
		cancel()
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
		case err != nil:
			if !warned && ctx.Err() == nil {
				m.log.Warn("sale asleep: its requests could not be looked for; trying again", "sale", sale, "err", err)
				warned = true
			}
		case last.Sequence > cursor:
			return // came while the writer retired, or the subscription missed it
		}
		select {
		case <-came:
			return
		case <-at:
			return
		case <-ctx.Done():
			return
		case <-reconnected:
		case <-look.C:
			// Jittered, so that many sleeping sales do not look at once.
			look.Reset(m.lookEvery - m.lookEvery/8 + rand.N(m.lookEvery/4+1))
		}
	}
}

// holdBack gives the process with fewer sales a lease TTL to take a new
// sale's lease, looking every step whether it has.
func (m *Manager) holdBack(ctx context.Context, sale string, step time.Duration) {
	m.holding.Add(1)
	defer m.holding.Add(-1)
	for end := time.Now().Add(m.ttl); time.Now().Before(end) && m.leaseFree(ctx, sale); {
		wait.Sleep(ctx, min(step, time.Until(end)))
	}
}

// leaseFree reports whether nobody holds sale's lease now.
func (m *Manager) leaseFree(ctx context.Context, sale string) bool {
	_, err := m.leases.Get(ctx, sale)
	return errors.Is(err, jetstream.ErrKeyNotFound)
}

func (m *Manager) acquire(ctx context.Context, sale string) (uint64, error) {
	rev, err := m.leases.Create(ctx, sale, []byte(m.node))
	if err == nil {
		return rev, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return 0, err
	}
	e, err := m.leases.Get(ctx, sale)
	if err != nil {
		return 0, err // gone meanwhile: the next try creates it
	}
	if string(e.Value()) != m.node {
		return 0, errLeaseHeld
	}
	// Our own lease from a previous run of this node: take it back now.
	return m.leases.Update(ctx, sale, []byte(m.node), e.Revision())
}

func (m *Manager) renew(ctx context.Context, lost context.CancelFunc, sale string, rev uint64) {
	t := time.NewTicker(m.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, m.ttl/3)
		next, err := m.leases.Update(rctx, sale, []byte(m.node), rev)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				m.log.Warn("lease lost", "sale", sale, "err", err)
			}
			lost()
			return
		}
		rev = next
	}
}

func (m *Manager) release(sale string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	e, err := m.leases.Get(ctx, sale)
	if err != nil || string(e.Value()) != m.node {
		return
	}
	_ = m.leases.Delete(ctx, sale, jetstream.LastRevision(e.Revision()))
}
