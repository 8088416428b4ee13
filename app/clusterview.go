package app

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/flashgate/flashgate/cluster"
	"github.com/flashgate/flashgate/events"
	"github.com/nats-io/nats.go/jetstream"
)

// describe fills this process's heartbeat: where it serves, how far its
// views are, which sales it writes for.
func (a *App) describe(m *cluster.Member) {
	if u := a.httpURL.Load(); u != nil {
		m.HTTP = *u
	}
	m.Applied = a.ops.applied.Load()
	if mgr := a.liveMgr.Load(); mgr != nil {
		m.Owns, _ = mgr.Status()
		slices.Sort(m.Owns)
	}
}

// ClusterView is what `flashgate cluster status` shows: the live
// processes and the sales' writer leases.
type ClusterView struct {
	At       time.Time      `json:"at"`
	LastSeq  uint64         `json:"lastSeq"` // the event stream's last sequence
	Nodes    []ClusterNode  `json:"processes"`
	Leases   []ClusterLease `json:"leases"`
	Degraded bool           `json:"degraded"` // this process cannot write its heartbeat
}

// ClusterNode is one live process.
type ClusterNode struct {
	cluster.Member
	BeatAgeMs  int64  `json:"beatAgeMs"`
	LagMessage uint64 `json:"projectionLag"` // messages its views are behind the stream
}

// ClusterLease is one sale's writer lease.
type ClusterLease struct {
	Sale      string `json:"sale"`
	Owner     string `json:"owner"`
	RenewedMs int64  `json:"renewedAgoMs"` // since the owner last renewed it
	TTLms     int64  `json:"ttlMs"`
	Revision  uint64 `json:"revision"`
}

// Cluster reads the cluster's state: the presence heartbeats this process
// heard, and the lease bucket.
func (a *App) Cluster(ctx context.Context) (ClusterView, error) {
	now := time.Now()
	v := ClusterView{At: now.UTC(), Degraded: a.guard.presence.Degraded()}
	st, err := a.JS.Stream(ctx, events.StreamName)
	if err != nil {
		return v, fmt.Errorf("stream: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return v, fmt.Errorf("stream: %w", err)
	}
	v.LastSeq = info.State.LastSeq
	for _, m := range a.guard.presence.Members() {
		n := ClusterNode{Member: m, BeatAgeMs: now.Sub(m.Beat).Milliseconds()}
		if m.Applied < v.LastSeq {
			n.LagMessage = v.LastSeq - m.Applied
		}
		v.Nodes = append(v.Nodes, n)
	}
	leases, err := a.JS.KeyValue(ctx, events.LeaseBucket)
	if err != nil {
		return v, fmt.Errorf("lease bucket: %w", err)
	}
	keys, err := leases.ListKeys(ctx)
	if err != nil {
		return v, fmt.Errorf("lease bucket: %w", err)
	}
	for k := range keys.Keys() {
		e, err := leases.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // released meanwhile
		}
		if err != nil {
			return v, fmt.Errorf("lease of %s: %w", k, err)
		}
		v.Leases = append(v.Leases, ClusterLease{Sale: k, Owner: string(e.Value()), RenewedMs: now.Sub(e.Created()).Milliseconds(),
			TTLms: a.cfg.LeaseTTL.Milliseconds(), Revision: e.Revision()})
	}
	slices.SortFunc(v.Leases, func(x, y ClusterLease) int {
		if x.Sale < y.Sale {
			return -1
		}
		if x.Sale > y.Sale {
			return 1
		}
		return 0
	})
	return v, nil
}
