package handlers

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/internal/fgtest"
	"github.com/flashgate/flashgate/stream"
	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go/jetstream"
)

// appendPurchases appends one message of purchases: each shopper presents
// the token of the request id given.
func appendPurchases(tb testing.TB, e *env, sale string, tokens map[string]string) {
	tb.Helper()
	ids := events.NewIDs()
	var rb events.RequestBatch
	for shopper, tok := range tokens {
		rb.Requests = append(rb.Requests, events.Event{ID: ids.New(t0), Type: events.TypePurchaseRequested, Version: events.SchemaVersion,
			Sale: sale, Time: t0, Shopper: shopper, Data: &events.PurchaseRequested{TokenID: tok}})
	}
	data, err := events.EncodeRequests(rb)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := e.js.Publish(context.Background(), events.RequestSubject(sale), data); err != nil {
		tb.Fatal(err)
	}
}

// snapshotInfo returns the stored snapshot's batch version and sequence (0: none).
func snapshotInfo(tb testing.TB, obs jetstream.ObjectStore, sale string) (version, seq uint64) {
	tb.Helper()
	info, err := obs.GetInfo(context.Background(), sale)
	if err != nil {
		return 0, 0
	}
	version, _ = strconv.ParseUint(info.Headers.Get(hdrSnapshotVersion), 10, 64)
	seq, _ = strconv.ParseUint(info.Headers.Get(hdrSnapshotSeq), 10, 64)
	return version, seq
}

// snapshottedSale runs a writer that takes snapshots over a sale's first
// requests (tokens issued, some bought), waits for its snapshot, then has
// a writer that takes none decide more, so that batches follow the
// snapshot. It returns the snapshot bucket.
func snapshottedSale(t *testing.T, e *env, sale string) jetstream.ObjectStore {
	t.Helper()
	ctx := context.Background()
	obs, err := e.js.ObjectStore(ctx, stream.SnapshotBucket)
	if err != nil {
		t.Fatal(err)
	}
	e.CreateSale(t, sale, 60, 10*time.Minute, t0)
	ids := e.AppendTokenRequests(t, sale, "shopper", 10, 5, t0)
	buy := map[string]string{}
	for m := range 10 {
		buy[fmt.Sprintf("shopper-%d-0", m)] = ids[5*m]
	}
	appendPurchases(t, e, sale, buy)
	w := NewWriter(e.js, e.st, sale, WriterConfig{ID: "w1", MaxBatch: 8, Now: clockAt(t0.Add(time.Second)), Log: quiet,
		SnapshotEvery: 20, SnapshotMinGap: time.Nanosecond})
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	fgtest.WaitFor(t, 30*time.Second, func() error {
		if v, _ := snapshotInfo(t, obs, sale); v == 0 {
			return fmt.Errorf("no snapshot yet")
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// More after the snapshot: tokens run out and are issued again, more
	// purchases, some refused.
	more := e.AppendTokenRequests(t, sale, "later", 5, 4, t0)
	appendPurchases(t, e, sale, map[string]string{"later-0-0": more[0], "later-1-1": more[5], "shopper-0-0": ids[0], "shopper-1-1": ids[0]})
	w2 := NewWriter(e.js, e.st, sale, WriterConfig{ID: "w2", MaxBatch: 8, Now: clockAt(t0.Add(11 * time.Minute)), Log: quiet,
		SnapshotEvery: -1, SnapshotInterval: -1})
	runUntil(t, e, w2, sale)
	return obs
}

// loadBoth loads the sale by a full replay and with snapshots, and checks
// that the states are the same. It returns the sequence the second loaded
// its snapshot from (0: it replayed in full).
func loadBoth(t *testing.T, e *env, sale string, log *slog.Logger) uint64 {
	t.Helper()
	ctx := context.Background()
	full := NewWriter(e.js, e.st, sale, WriterConfig{ID: "full", Log: quiet, NoSnapshots: true})
	if err := full.Load(ctx); err != nil {
		t.Fatal(err)
	}
	snap := NewWriter(e.js, e.st, sale, WriterConfig{ID: "snap", Log: log})
	if err := snap.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if full.headSeq != snap.headSeq || !full.lastAt.Equal(snap.lastAt) || !bytes.Equal(full.last, snap.last) {
		t.Fatalf("loaded up to %d at %v, a full replay to %d at %v", snap.headSeq, snap.lastAt, full.headSeq, full.lastAt)
	}
	if err := sameState(full.State(), snap.State()); err != nil {
		t.Fatalf("loaded from the snapshot at %d: %v", snap.loaded, err)
	}
	return snap.loaded
}

// TestWriterSnapshotTakeover: the writer saves snapshots as it commits; a
// new owner loads the latest, checks it against the stream, applies the
// batches after it and has the state a full replay gives.
func TestWriterSnapshotTakeover(t *testing.T) {
	e := newEnv(t)
	obs := snapshottedSale(t, e, "s")
	version, seq := snapshotInfo(t, obs, "s")
	_, last, _, _ := stream.LastDecision(context.Background(), e.st, "s")
	if seq == 0 || seq >= last {
		t.Fatalf("snapshot at %d (version %d), the last batch at %d: want one before it", seq, version, last)
	}
	var logs fgtest.Buffer
	if got := loadBoth(t, e, "s", logs.Logger()); got != seq {
		t.Fatalf("loaded from the snapshot at %d, want %d\n%s", got, seq, logs.String())
	}
	if !strings.Contains(logs.String(), "snapshot loaded") {
		t.Errorf("no log of the snapshot:\n%s", logs.String())
	}
	// The new owner goes on deciding from there.
	w := NewWriter(e.js, e.st, "s", WriterConfig{ID: "w3", Now: clockAt(t0.Add(12 * time.Minute)), Log: quiet})
	e.AppendTokenRequests(t, "s", "last", 2, 2, t0)
	runUntil(t, e, w, "s")
	if w.loaded != seq {
		t.Fatalf("the owner loaded from %d, want %d", w.loaded, seq)
	}
	loadBoth(t, e, "s", quiet)
}

// TestLoadIgnoresBadSnapshots: a snapshot that does not decode, is too new,
// is of another sale, or does not match the batch at its sequence is
// ignored, with a log line saying why, and the sale is replayed in full.
func TestLoadIgnoresBadSnapshots(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	obs := snapshottedSale(t, e, "s")
	res, err := obs.Get(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	res.Close()
	good, err := readSnapshot(ctx, obs, "s")
	if err != nil {
		t.Fatal(err)
	}
	w := NewWriter(e.js, e.st, "s", WriterConfig{ID: "x", Log: quiet, NoSnapshots: true})
	if err := w.Load(ctx); err != nil {
		t.Fatal(err)
	}
	_, seq := snapshotInfo(t, obs, "s")
	// Snapshots of the loaded state, doctored.
	doctored := func(f func(sn *snapshot)) []byte {
		sn := copySnapshot(w.State(), "s", w.headSeq, w.lastAt, w.last)
		f(sn)
		return sn.encode()
	}
	tooNew := binary.AppendUvarint([]byte(snapshotMagic), SnapshotVersion+1)
	// A frame header that claims a body of 8 GiB.
	prefix := binary.AppendUvarint([]byte(snapshotMagic), SnapshotVersion)
	var fh zstd.Header
	if err := fh.Decode(good[len(prefix):]); err != nil {
		t.Fatal(err)
	}
	huge, err := (&zstd.Header{WindowSize: 1 << 20, HasFCS: true, FrameContentSize: 8 << 30}).AppendTo(bytes.Clone(prefix))
	if err != nil {
		t.Fatal(err)
	}
	huge = append(huge, good[len(prefix)+fh.HeaderSize:]...)
	cases := map[string]struct {
		data []byte
		why  string
	}{
		"garbage":               {[]byte("not a snapshot at all"), "not a snapshot"},
		"empty":                 {nil, "not a snapshot"},
		"too new":               {append(tooNew, good[len(tooNew):]...), "newer flashgate"},
		"no version":            {append([]byte(snapshotMagic), 0), "no format version"},
		"truncated":             {good[:len(good)/2], "corrupt"},
		"a huge body claimed":   {huge, "a body of 8589934592 bytes"},
		"a byte flipped":        {flip(good, len(good)-20), "corrupt"},
		"another sale":          {doctored(func(sn *snapshot) { sn.sale = "t" }), "snapshot of sale"},
		"another batch":         {doctored(func(sn *snapshot) { sn.seq = seq }), "the batch there is another one"},
		"no such batch":         {doctored(func(sn *snapshot) { sn.seq = 1 << 40 }), "at sequence 1099511627776"},
		"a head that differs":   {doctored(func(sn *snapshot) { sn.head.Redeemed++ }), "does not match the batch there"},
		"a time that differs":   {doctored(func(sn *snapshot) { sn.decidedAt = sn.decidedAt.Add(time.Second) }), "does not match the batch there"},
		"tokens that disagree":  {doctored(func(sn *snapshot) { sn.outstanding = sn.outstanding[:len(sn.outstanding)-1] }), "the head says"},
		"a token twice":         {doctored(func(sn *snapshot) { sn.redeemed = append(sn.redeemed, sn.redeemed[0]) }), "twice"},
		"the expiry order lost": {doctored(func(sn *snapshot) { reverse(sn.outstanding) }), "expiry order"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := obs.PutBytes(ctx, "s", c.data); err != nil {
				t.Fatal(err)
			}
			var logs fgtest.Buffer
			if got := loadBoth(t, e, "s", logs.Logger()); got != 0 {
				t.Fatalf("loaded from a bad snapshot at %d", got)
			}
			if l := logs.String(); !strings.Contains(l, "snapshot not used") || !strings.Contains(l, c.why) {
				t.Fatalf("log does not say why (%q):\n%s", c.why, l)
			}
		})
	}
	// And the good one is taken again.
	if _, err := obs.PutBytes(ctx, "s", good); err != nil {
		t.Fatal(err)
	}
	if got := loadBoth(t, e, "s", quiet); got != seq {
		t.Fatalf("loaded from %d, want %d", got, seq)
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x40
	return c
}

func reverse(ts []*token) {
	for i, j := 0, len(ts)-1; i < j; i, j = i+1, j-1 {
		ts[i], ts[j] = ts[j], ts[i]
	}
}

// TestSnapshotNeverReplacesANewerOne: a writer that lost the sale and is
// still saving an old snapshot does not replace the new owner's.
func TestSnapshotNeverReplacesANewerOne(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	obs := snapshottedSale(t, e, "s")
	version, seq := snapshotInfo(t, obs, "s")
	w := NewWriter(e.js, e.st, "s", WriterConfig{ID: "x", Log: quiet})
	if err := w.Load(ctx); err != nil {
		t.Fatal(err)
	}
	old := copySnapshot(w.State(), "s", w.headSeq, w.lastAt, w.last)
	old.head.Version = version // as old as the one stored
	if saved, err := putSnapshot(ctx, obs, old, old.encode()); err != nil || saved {
		t.Fatalf("an old snapshot replaced a newer one: %v, %v", saved, err)
	}
	if v, s := snapshotInfo(t, obs, "s"); v != version || s != seq {
		t.Fatalf("stored snapshot now at version %d seq %d, want %d %d", v, s, version, seq)
	}
	sn := copySnapshot(w.State(), "s", w.headSeq, w.lastAt, w.last)
	if saved, err := putSnapshot(ctx, obs, sn, sn.encode()); err != nil || !saved {
		t.Fatalf("a newer snapshot not saved: %v, %v", saved, err)
	}
	if got := loadBoth(t, e, "s", quiet); got != w.headSeq {
		t.Fatalf("loaded from %d, want the newer snapshot at %d", got, w.headSeq)
	}
}

// TestSnapshotDueWhileSavingIsSkipped: a snapshot due while the last one is
// still being saved is skipped, not queued; the writer goes on at once.
func TestSnapshotDueWhileSavingIsSkipped(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	obs := snapshottedSale(t, e, "s")
	version, _ := snapshotInfo(t, obs, "s")
	var logs fgtest.Buffer
	w := NewWriter(e.js, e.st, "s", WriterConfig{ID: "x", Log: logs.Logger(), SnapshotEvery: 1, SnapshotMinGap: time.Nanosecond})
	if err := w.Load(ctx); err != nil {
		t.Fatal(err)
	}
	<-w.snapIdle // as if a snapshot were being saved
	w.sinceSnap, w.lastSnap = 100, time.Time{}
	w.maybeSnapshot(ctx)
	if !strings.Contains(logs.String(), "snapshot skipped") {
		t.Fatalf("not skipped\n%s", logs.String())
	}
	if w.sinceSnap != 100 || w.snapRetry.IsZero() {
		// Still to save: the next try comes after SnapshotMinGap.
		t.Fatalf("after the skip: %d decisions pending (want 100), next try %v", w.sinceSnap, w.snapRetry)
	}
	if v, _ := snapshotInfo(t, obs, "s"); v != version {
		t.Fatalf("a snapshot was saved (version %d)", v)
	}
	// Once the last one is saved, the next due is taken.
	w.snapIdle <- struct{}{}
	w.sinceSnap, w.lastSnap = 100, time.Time{}
	w.maybeSnapshot(ctx)
	w.snapWG.Wait()
	if v, _ := snapshotInfo(t, obs, "s"); v != w.State().Head.Version {
		t.Fatalf("snapshot at version %d, want %d\n%s", v, w.State().Head.Version, logs.String())
	}
}

// TestSnapshotsWhileDeciding: a writer snapshotting often while it decides
// (the race detector watches the copy and the background encoding), for a
// sale with and without a waiting room; the last snapshot and the batches
// after it load into the state a full replay gives.
func TestSnapshotsWhileDeciding(t *testing.T) {
	for _, withQueue := range []bool{false, true} {
		t.Run(map[bool]string{false: "tokens", true: "queue"}[withQueue], func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			obs, err := e.js.ObjectStore(ctx, stream.SnapshotBucket)
			if err != nil {
				t.Fatal(err)
			}
			sc := &events.SaleCreated{Stock: 300, QuotaBuffer: 1.2, Quota: 360, PerUserLimit: 1, TokenTTL: events.Duration(time.Hour), OpensAt: t0}
			if withQueue {
				sc.Queue = &events.Queue{AdmissionRate: 100_000, ClaimWindow: events.Duration(time.Hour), IdleTimeout: events.Duration(time.Hour)}
			}
			ev := events.Event{ID: events.NewIDs().New(t0), Type: events.TypeSaleCreated, Version: events.SchemaVersion, Sale: "s", Time: t0, Data: sc}
			if _, err := stream.CreateSale(ctx, e.js, ev); err != nil {
				t.Fatal(err)
			}
			ids := events.NewIDs()
			var sent [][]events.Event
			for m := range 100 {
				var rb events.RequestBatch
				for i := range 8 {
					shopper := fmt.Sprintf("shopper-%d-%d", m, i)
					if withQueue {
						rb.Requests = append(rb.Requests, events.Event{ID: ids.New(t0), Type: events.TypeQueueJoinRequested, Version: events.SchemaVersion,
							Sale: "s", Time: t0, Shopper: shopper, Data: &events.QueueJoinRequested{}})
					} else {
						rb.Requests = append(rb.Requests, events.Event{ID: ids.New(t0), Type: events.TypeTokenRequested, Version: events.SchemaVersion,
							Sale: "s", Time: t0, Shopper: shopper, Data: &events.TokenRequested{}})
					}
				}
				if m > 1 && m%2 == 0 {
					// The shoppers of the message before the last buy (the token is
					// the request's id): a batch holds at most two messages, and
					// admissions come at the end of a batch.
					for _, r := range sent[m-2][:4] {
						rb.Requests = append(rb.Requests, events.Event{ID: ids.New(t0), Type: events.TypePurchaseRequested, Version: events.SchemaVersion,
							Sale: "s", Time: t0, Shopper: r.Shopper, Data: &events.PurchaseRequested{TokenID: r.ID}})
					}
				}
				sent = append(sent, rb.Requests)
				data, err := events.EncodeRequests(rb)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := e.js.Publish(ctx, events.RequestSubject("s"), data); err != nil {
					t.Fatal(err)
				}
			}
			w := NewWriter(e.js, e.st, "s", WriterConfig{ID: "w", MaxBatch: 16, Now: clockAt(t0.Add(time.Second)), Log: quiet,
				SnapshotEvery: 30, SnapshotMinGap: time.Nanosecond})
			runUntil(t, e, w, "s")
			if w.State().Head.Redeemed == 0 {
				t.Fatalf("nothing bought: %+v", w.State().Head)
			}
			if v, _ := snapshotInfo(t, obs, "s"); v == 0 {
				t.Fatal("no snapshot")
			}
			if got := loadBoth(t, e, "s", quiet); got == 0 {
				t.Fatal("not loaded from the snapshot")
			}
		})
	}
}

// TestLoadFallsBackWhenBatchesDoNotApply: a snapshot that matches its batch
// but not what came after it (its tokens renamed: the later expiries and
// purchases name tokens it does not hold) is dropped for a full replay,
// not retried for ever.
func TestLoadFallsBackWhenBatchesDoNotApply(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	obs := snapshottedSale(t, e, "s")
	good, err := readSnapshot(ctx, obs, "s")
	if err != nil {
		t.Fatal(err)
	}
	r, err := openSnapshot(good)
	if err != nil {
		t.Fatal(err)
	}
	ev, _, err := stream.Sale(ctx, e.st, "s")
	if err != nil {
		t.Fatal(err)
	}
	sale, err := SaleFromEvent(ev)
	if err != nil {
		t.Fatal(err)
	}
	st, err := r.restore(sale)
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.st.GetMsg(ctx, r.seq)
	if err != nil {
		t.Fatal(err)
	}
	sn := copySnapshot(st, "s", r.seq, r.decidedAt, m.Data)
	if len(sn.outstanding) == 0 {
		t.Fatal("no outstanding token in the snapshot to rename")
	}
	for _, tk := range sn.outstanding {
		tk.id = "renamed-" + tk.id
	}
	if err := obs.Delete(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	if saved, err := putSnapshot(ctx, obs, sn, sn.encode()); err != nil || !saved {
		t.Fatalf("renamed snapshot not stored: %v", err)
	}
	var logs fgtest.Buffer
	if got := loadBoth(t, e, "s", logs.Logger()); got != 0 {
		t.Fatalf("loaded from the renamed snapshot at %d", got)
	}
	if l := logs.String(); !strings.Contains(l, "do not apply to it") || !strings.Contains(l, "not outstanding") {
		t.Fatalf("log does not say why:\n%s", l)
	}
	// It is deleted, so that the next load does not fetch it again.
	if _, err := obs.GetInfo(ctx, "s"); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Fatalf("the untrusted snapshot is still there: %v", err)
	}
}

// flakyStore is a JetStream whose first ObjectStore calls fail as a
// server that does not answer would.
type flakyStore struct {
	jetstream.JetStream
	fails atomic.Int32
}

func (f *flakyStore) ObjectStore(ctx context.Context, bucket string) (jetstream.ObjectStore, error) {
	if f.fails.Add(-1) >= 0 {
		return nil, context.DeadlineExceeded
	}
	return f.JetStream.ObjectStore(ctx, bucket)
}

// TestSnapshotStoreRetried: a writer that could not open the snapshot
// bucket when it loaded the sale tries again when a snapshot is due, and
// saves it once the bucket answers.
func TestSnapshotStoreRetried(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.createSale(t, "s", 100)
	e.appendRequests(t, "s", 10, 5)
	js := &flakyStore{JetStream: e.js}
	js.fails.Store(2) // the load's, and the first snapshot's
	w := NewWriter(js, e.st, "s", WriterConfig{Log: quiet, Now: clockAt(t0.Add(time.Minute)), MaxBatch: 5,
		SnapshotEvery: 5, SnapshotMinGap: time.Nanosecond})
	obs, err := e.js.ObjectStore(ctx, stream.SnapshotBucket)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(rctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	fgtest.WaitFor(t, 10*time.Second, func() error {
		if v, _ := snapshotInfo(t, obs, "s"); v == 0 {
			return fmt.Errorf("no snapshot saved after the bucket came back (ObjectStore failures left: %d)", js.fails.Load())
		}
		return nil
	})
}
