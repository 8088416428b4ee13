package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashgate/flashgate/cluster"
	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/internal/fgtest"
	"github.com/nats-io/nats.go/jetstream"
)

// waitFor polls cond until it holds or the bound passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	fgtest.WaitFor(t, 10*time.Second, func() error {
		if !cond() {
			return fmt.Errorf("waiting for %s", what)
		}
		return nil
	})
}

func start(t *testing.T, kv jetstream.KeyValue, node string, onChange func(int, bool)) (*cluster.Presence, context.CancelFunc, chan struct{}) {
	t.Helper()
	p := cluster.New(kv, cluster.Config{Self: cluster.Member{Node: node, Started: time.Now()}, Interval: 50 * time.Millisecond, OnChange: onChange})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return p, cancel, done
}

func TestProcessesSeeEachOther(t *testing.T) {
	env := fgtest.New(t)
	kv, err := env.JS.KeyValue(context.Background(), events.NodesBucket)
	if err != nil {
		t.Fatal(err)
	}
	var changes, peak atomic.Int32 // peak: the most live processes reported since it was reset
	a, _, _ := start(t, kv, "node-a", func(live int, _ bool) {
		changes.Add(1)
		for old := peak.Load(); int32(live) > old && !peak.CompareAndSwap(old, int32(live)); old = peak.Load() {
		}
	})
	b, cancelB, doneB := start(t, kv, "node-b", nil)
	c, _, _ := start(t, kv, "node-c", nil)
	for _, p := range []*cluster.Presence{a, b, c} {
		waitFor(t, "three live processes", func() bool { return p.Live() == 3 })
	}
	if ms := a.Members(); len(ms) != 3 || ms[0].Node != "node-a" || ms[2].Node != "node-c" {
		t.Fatalf("members: %+v", ms)
	}
	// A process that stops says so: the others count it gone at once.
	cancelB()
	<-doneB
	waitFor(t, "two live processes", func() bool { return a.Live() == 2 && c.Live() == 2 })

	// A process that dies silently is gone once its heartbeats stop.
	ghost, _ := json.Marshal(cluster.Member{Node: "node-ghost"})
	peak.Store(0)
	if _, err := kv.Put(context.Background(), "node-ghost", ghost); err != nil {
		t.Fatal(err)
	}
	// It counts for three heartbeat intervals (150 ms): caught as it is
	// reported, not by polling.
	waitFor(t, "the ghost counted", func() bool { return peak.Load() == 3 })
	waitFor(t, "the ghost gone", func() bool { return a.Live() == 2 })
	if changes.Load() < 3 {
		t.Fatalf("OnChange called %d times", changes.Load())
	}
}

func TestDegradedKeepsTheLastCount(t *testing.T) {
	env := fgtest.New(t)
	kv, err := env.JS.KeyValue(context.Background(), events.NodesBucket)
	if err != nil {
		t.Fatal(err)
	}
	var degraded atomic.Bool
	a, _, _ := start(t, kv, "node-a", func(_ int, d bool) { degraded.Store(d) })
	start(t, kv, "node-b", nil)
	waitFor(t, "two live processes", func() bool { return a.Live() == 2 })
	env.Server.Shutdown()
	waitFor(t, "degraded", func() bool { return a.Degraded() && degraded.Load() })
	time.Sleep(300 * time.Millisecond) // well past Dead: heartbeats stopped arriving
	if a.Live() != 2 {
		t.Fatalf("degraded: live %d, want the last known 2", a.Live())
	}
}
