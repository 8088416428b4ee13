package handlers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/stream"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Where a writer keeps its snapshots: one object per sale, named by the sale
// id, in the object store stream.SnapshotBucket; saving one replaces the
// last (the object store purges the old chunks). The object's headers name
// the batch it was taken at, so that a writer never replaces a newer
// snapshot with an older one.
const (
	hdrSnapshotVersion = "Flashgate-Snapshot-Version" // the batch version
	hdrSnapshotSeq     = "Flashgate-Snapshot-Seq"     // the batch's stream sequence
	hdrSnapshotFormat  = "Flashgate-Snapshot-Format"  // SnapshotVersion
	snapshotChunkSize  = 512 << 10                    // well inside a standard 1 MiB max payload
	snapshotTimeout    = 2 * time.Minute              // to read or save one
	// snapshotGrace is how long an upload under way may go on once the
	// writer stops: an upload cut short leaves its chunks behind in the
	// bucket (the object store cannot purge them with a cancelled context).
	snapshotGrace = 5 * time.Second
)

// snapshotStore returns the snapshot bucket, or nil when it cannot be had
// now (the next snapshot due tries again) or there is none (snapshots are
// then off for this writer).
func (w *Writer) snapshotStore(ctx context.Context) jetstream.ObjectStore {
	if w.snaps != nil || w.noBucket.Load() {
		return w.snaps
	}
	obs, err := w.js.ObjectStore(ctx, stream.SnapshotBucket)
	if err != nil {
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			w.noBucket.Store(true)
			w.cfg.Log.Info("no snapshot bucket: the sale is replayed in full and no snapshot is saved", "sale", w.sale, "bucket", stream.SnapshotBucket)
		} else {
			w.cfg.Log.Warn("snapshot bucket unavailable", "sale", w.sale, "err", err)
		}
		return nil
	}
	w.snaps = obs
	return obs
}

// loadSnapshot returns the state of the sale's latest snapshot, the stream
// sequence and decision time of the batch it was taken at and that batch,
// once the batch is found in the stream as the snapshot recorded it. With
// no usable snapshot it returns a nil state, having logged why.
func (w *Writer) loadSnapshot(ctx context.Context, sale Sale) (*State, uint64, time.Time, []byte) {
	obs := w.snapshotStore(ctx)
	if obs == nil {
		return nil, 0, time.Time{}, nil
	}
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, snapshotTimeout)
	defer cancel()
	data, err := readSnapshot(rctx, obs, w.sale)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, 0, time.Time{}, nil
	}
	fail := func(err error) (*State, uint64, time.Time, []byte) {
		w.cfg.Log.Warn("snapshot not used: replaying the sale from its first batch", "sale", w.sale, "err", err)
		return nil, 0, time.Time{}, nil
	}
	if err != nil {
		return fail(err)
	}
	fetched := time.Since(start)
	r, err := openSnapshot(data)
	if err != nil {
		return fail(err)
	}
	batch, err := w.verifySnapshot(rctx, r)
	if err != nil {
		return fail(err)
	}
	state, err := r.restore(sale)
	if err != nil {
		return fail(err)
	}
	tokens, shoppers, _ := state.Sizes()
	w.cfg.Log.Info("snapshot loaded", "sale", w.sale, "version", r.head.Version, "seq", r.seq, "bytes", len(data),
		"tokens", tokens, "shoppers", shoppers, "fetch", fetched.Round(time.Millisecond), "took", time.Since(start).Round(time.Millisecond))
	return state, r.seq, r.decidedAt, batch
}

// dropSnapshot deletes the sale's snapshot if it is still the one taken at
// stream sequence seq: one found not to be trusted, so that the next load
// does not fetch it again (and a new one of the same version can be saved).
func (w *Writer) dropSnapshot(ctx context.Context, seq uint64) {
	if w.snaps == nil {
		return
	}
	info, err := w.snaps.GetInfo(ctx, w.sale)
	if err != nil || info.Headers.Get(hdrSnapshotSeq) != strconv.FormatUint(seq, 10) {
		return // gone, or replaced meanwhile
	}
	if err := w.snaps.Delete(ctx, w.sale); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		w.cfg.Log.Warn("untrusted snapshot not deleted", "sale", w.sale, "snapshot_seq", seq, "err", err)
	}
}

// readSnapshot reads the sale's snapshot object whole (its digest checked).
func readSnapshot(ctx context.Context, obs jetstream.ObjectStore, sale string) ([]byte, error) {
	res, err := obs.Get(ctx, sale)
	if err != nil {
		return nil, err
	}
	defer res.Close()
	info, err := res.Info()
	if err != nil {
		return nil, err
	}
	if info.Size > maxSnapshotSize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrSnapshotCorrupt, info.Size, maxSnapshotSize)
	}
	var b bytes.Buffer
	b.Grow(int(info.Size) + bytes.MinRead)
	if _, err := b.ReadFrom(io.LimitReader(res, maxSnapshotSize+1)); err != nil {
		return nil, fmt.Errorf("read snapshot of %s: %w", sale, err)
	}
	return b.Bytes(), nil
}

// verifySnapshot checks that the batch a snapshot was taken at is in the
// stream: at its sequence, of this sale, byte for byte the batch it
// recorded, with its version, head and decision time. It returns the batch.
func (w *Writer) verifySnapshot(ctx context.Context, r *snapshotReader) ([]byte, error) {
	if r.sale != w.sale {
		return nil, fmt.Errorf("snapshot of sale %q", r.sale)
	}
	m, err := w.st.GetMsg(ctx, r.seq)
	if err != nil {
		return nil, fmt.Errorf("snapshot of batch %d at sequence %d: %w", r.head.Version, r.seq, err)
	}
	if m.Subject != events.DecisionSubject(w.sale) {
		return nil, fmt.Errorf("snapshot of batch %d at sequence %d: the message there is on %s", r.head.Version, r.seq, m.Subject)
	}
	if sha256.Sum256(m.Data) != r.digest {
		return nil, fmt.Errorf("snapshot of batch %d at sequence %d: the batch there is another one", r.head.Version, r.seq)
	}
	db, err := events.DecodeDecisions(m.Data)
	if err != nil {
		return nil, fmt.Errorf("snapshot of batch %d at sequence %d: %w", r.head.Version, r.seq, err)
	}
	if db.Sale != w.sale || db.Head.Version != r.head.Version || db.Head.Cursor != r.head.Cursor || !db.Head.Same(r.head) || !db.DecidedAt.Equal(r.decidedAt) {
		return nil, fmt.Errorf("snapshot of batch %d at sequence %d (head %+v) does not match the batch there (sale %s, head %+v)",
			r.head.Version, r.seq, r.head, db.Sale, db.Head)
	}
	return m.Data, nil
}

// maybeSnapshot takes a snapshot after a committed batch if one is due and
// none is being saved. It copies what it needs now and leaves encoding and
// upload to a goroutine that Run waits for.
func (w *Writer) maybeSnapshot(ctx context.Context) {
	if w.snapshotDueAt(time.Now()) {
		w.startSnapshot(ctx)
	}
}

// startSnapshot copies the committed state and saves it in the background,
// unless a snapshot is still being saved (it is tried again after
// SnapshotMinGap). The goroutine also opens the snapshot bucket if the
// writer has not had it yet, so that a bucket that does not answer never
// holds up the decisions. A snapshot that fails is logged; the decisions
// it held are in the next one.
func (w *Writer) startSnapshot(ctx context.Context) {
	now := time.Now()
	select {
	case <-w.snapIdle:
	default:
		w.snapRetry = now.Add(w.cfg.SnapshotMinGap)
		w.cfg.Log.Info("snapshot skipped: the last one is still being saved", "sale", w.sale, "version", w.state.Head.Version)
		return
	}
	w.lastSnap, w.sinceSnap = now, 0
	sn := copySnapshot(w.state, w.sale, w.headSeq, w.lastAt, w.last)
	copied := time.Since(now)
	w.snapWG.Add(1)
	go func() {
		defer w.snapWG.Done()
		defer func() { w.snapIdle <- struct{}{} }() // after w.snaps is set: whoever takes the token next sees it
		octx, cancel := context.WithTimeout(ctx, snapshotOpenTimeout)
		obs := w.snapshotStore(octx)
		cancel()
		if obs == nil {
			return
		}
		w.saveSnapshot(ctx, sn, copied)
	}()
}

// snapshotOpenTimeout bounds the opening of the snapshot bucket.
const snapshotOpenTimeout = 5 * time.Second

// snapshotDue reports whether maybeSnapshot would take a snapshot now.
// The writer commits a batch before the next is decided whenever one is
// due, so that the state it copies is the committed one.
func (w *Writer) snapshotDue() bool { return w.snapshotDueAt(time.Now()) }

// unsaved reports whether decisions were committed (or replayed) since the
// last snapshot and a snapshot could hold them.
func (w *Writer) unsaved() bool {
	return !w.cfg.NoSnapshots && !w.noBucket.Load() && w.sinceSnap > 0 && w.headSeq > 0
}

func (w *Writer) snapshotDueAt(now time.Time) bool {
	if !w.unsaved() || now.Before(w.snapRetry) {
		return false
	}
	since := now.Sub(w.lastSnap)
	due := (w.cfg.SnapshotEvery > 0 && w.sinceSnap >= w.cfg.SnapshotEvery) ||
		(w.cfg.SnapshotInterval > 0 && since >= w.cfg.SnapshotInterval)
	return due && since >= w.cfg.SnapshotMinGap
}

// saveSnapshot encodes and uploads a snapshot (in the background).
func (w *Writer) saveSnapshot(ctx context.Context, sn *snapshot, copied time.Duration) {
	start := time.Now()
	data := sn.encode()
	encoded := time.Since(start)
	if ctx.Err() != nil {
		return // the writer stopped meanwhile
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), snapshotTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(snapshotGrace, cancel) })
	defer stop()
	saved, err := putSnapshot(pctx, w.snaps, sn, data)
	switch {
	case err != nil:
		w.cfg.Log.Warn("snapshot not saved", "sale", w.sale, "version", sn.head.Version, "err", err)
	case err == nil && !saved:
		w.cfg.Log.Info("snapshot not saved: a newer one is there", "sale", w.sale, "version", sn.head.Version)
	case err == nil:
		w.cfg.Log.Info("snapshot saved", "sale", w.sale, "version", sn.head.Version, "seq", sn.seq, "bytes", len(data),
			"copy", copied.Round(time.Microsecond), "encode", encoded.Round(time.Millisecond), "took", time.Since(start).Round(time.Millisecond))
	}
}

// putSnapshot stores data as the sale's snapshot unless the one stored is
// of the same batch or a later one (a writer that lost the sale may still be
// saving an older one). It reports whether it stored it.
func putSnapshot(ctx context.Context, obs jetstream.ObjectStore, sn *snapshot, data []byte) (bool, error) {
	info, err := obs.GetInfo(ctx, sn.sale)
	switch {
	case err == nil:
		if v, perr := strconv.ParseUint(info.Headers.Get(hdrSnapshotVersion), 10, 64); perr == nil && v >= sn.head.Version {
			return false, nil
		}
	case !errors.Is(err, jetstream.ErrObjectNotFound):
		return false, err
	}
	_, err = obs.Put(ctx, jetstream.ObjectMeta{
		Name:        sn.sale,
		Description: "flashgate: the sale's state as of a decision batch",
		Headers: nats.Header{
			hdrSnapshotVersion: {strconv.FormatUint(sn.head.Version, 10)},
			hdrSnapshotSeq:     {strconv.FormatUint(sn.seq, 10)},
			hdrSnapshotFormat:  {strconv.Itoa(SnapshotVersion)},
		},
		Opts: &jetstream.ObjectMetaOptions{ChunkSize: snapshotChunkSize},
	}, bytes.NewReader(data))
	if err != nil {
		return false, fmt.Errorf("save snapshot of %s: %w", sn.sale, err)
	}
	return true, nil
}
