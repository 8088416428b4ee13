package handlers

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/internal/fgtest"
	"github.com/flashgate/flashgate/stream"
)

// TestManagersShareASale: two nodes compete for one sale; one writes; when
// it stops, the other takes over and decides the requests that follow.
func TestManagersShareASale(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	kv, err := e.js.KeyValue(ctx, events.LeaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	e.createSale(t, "s", 1000)
	start := func(node string) (*Manager, context.CancelFunc) {
		m := NewManager(e.js, e.st, kv, node, 2*time.Second, WriterConfig{Log: quiet})
		mctx, cancel := context.WithCancel(ctx)
		m.Start(mctx)
		m.Add("s")
		return m, cancel
	}
	a, stopA := start("node-a")
	b, stopB := start("node-b")
	defer func() { stopB(); b.Wait() }()
	writersOf := func() map[string]bool {
		seen := map[string]bool{}
		for _, db := range e.decisions(t, "s") {
			seen[db.Writer[:6]] = true
		}
		return seen
	}
	decidedAll := func() error {
		info, err := e.st.Info(ctx)
		if err != nil {
			return err
		}
		db, _, ok, err := stream.LastDecision(ctx, e.st, "s")
		if err != nil || !ok {
			return fmt.Errorf("no decision yet: %v", err)
		}
		if last, _ := e.st.GetLastMsgForSubject(ctx, events.RequestSubject("s")); last != nil && db.Head.Cursor < last.Sequence {
			return fmt.Errorf("cursor %d, last request %d (stream at %d)", db.Head.Cursor, last.Sequence, info.State.LastSeq)
		}
		return nil
	}
	e.appendRequests(t, "s", 10, 10)
	fgtest.WaitFor(t, 10*time.Second, decidedAll)
	first := writersOf()
	if len(first) != 1 {
		t.Fatalf("batches by %v: want exactly one writer", first)
	}
	owner := "node-a"
	if first["node-b"] {
		owner = "node-b"
		stopB()
		b.Wait()
	} else {
		stopA()
		a.Wait()
	}
	e.AppendTokenRequests(t, "s", "later", 10, 10, t0)
	fgtest.WaitFor(t, 10*time.Second, decidedAll)
	after := writersOf()
	if len(after) != 2 {
		t.Fatalf("after %s stopped, batches by %v: the other node did not take over", owner, after)
	}
	if owner == "node-a" {
		stopB()
		b.Wait()
	} else {
		stopA()
		a.Wait()
	}
	// The released lease is gone: nobody holds the sale.
	if _, err := kv.Get(ctx, "s"); err == nil {
		t.Error("lease still held after both managers stopped")
	}
}

// TestNewSalesSpread: new sales go to the process holding fewer leases, so
// six sales added one after another end three and three; a lease that frees
// up later (its owner stopped) is taken at once, without holding back for
// the peer that now holds fewer.
func TestNewSalesSpread(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	kv, err := e.js.KeyValue(ctx, events.LeaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	const ttl = 3 * time.Second
	nodes := []string{"node-a", "node-b"}
	mgrs := map[string]*Manager{}
	stops := map[string]context.CancelFunc{}
	for _, n := range nodes {
		m := NewManager(e.js, e.st, kv, n, ttl, WriterConfig{Log: quiet})
		m.SpreadOver(func() []string { return nodes }) // both always live
		mctx, cancel := context.WithCancel(ctx)
		m.Start(mctx)
		mgrs[n], stops[n] = m, cancel
	}
	defer func() {
		for _, n := range nodes {
			stops[n]()
			mgrs[n].Wait()
		}
	}()
	owner := func(sale string) string {
		e, err := kv.Get(ctx, sale)
		if err != nil {
			return ""
		}
		return string(e.Value())
	}
	for i := range 6 {
		sale := fmt.Sprint("s", i)
		e.createSale(t, sale, 10)
		for _, n := range nodes {
			mgrs[n].Add(sale)
		}
		fgtest.WaitFor(t, 2*ttl, func() error {
			if owner(sale) == "" {
				return fmt.Errorf("%s has no owner", sale)
			}
			return nil
		})
	}
	held := map[string][]string{}
	for i := range 6 {
		sale := fmt.Sprint("s", i)
		held[owner(sale)] = append(held[owner(sale)], sale)
	}
	if len(held["node-a"]) != 3 || len(held["node-b"]) != 3 {
		t.Fatalf("leases by node: %v; want three each", held)
	}
	// Nobody is left holding back for the other.
	fgtest.WaitFor(t, ttl, func() error {
		for _, n := range nodes {
			if h := mgrs[n].holding.Load(); h != 0 {
				return fmt.Errorf("%s holds back from %d sales", n, h)
			}
		}
		return nil
	})
	// node-a stops (its leases are released); node-b, now holding more than
	// node-a, takes them within its retry period (TTL/4), not after a hold-
	// back of a TTL.
	stops["node-a"]()
	mgrs["node-a"].Wait()
	fgtest.WaitFor(t, ttl-500*time.Millisecond, func() error {
		for _, sale := range held["node-a"] {
			if o := owner(sale); o != "node-b" {
				return fmt.Errorf("%s held by %q", sale, o)
			}
		}
		return nil
	})
}
