package handlers

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/queue"
	"github.com/klauspost/compress/zstd"
)

// Snapshots of a sale's state. A writer saves one now and then (see
// WriterConfig.SnapshotEvery); a new owner loads the latest, checks it
// against the stream, and applies only the decision batches after it, so
// that a takeover at a million shoppers takes seconds instead of a replay
// of the whole history.
//
// A snapshot is the state as of one committed batch: the batch's stream
// sequence, version, decision time and SHA-256, the head, the schedule in
// force, every outstanding token (in the expiry heap's order) and every
// redeemed token (in the order of purchase), and the waiting room's tickets
// (in join order) with the writer's side of the queue. The shoppers are not
// stored: a shopper's state is their outstanding token and the number of
// their redeemed tokens, and it is rebuilt from them. Whatever the decision
// code keeps must be in a snapshot or follow from it:
// TestSnapshotLoadEqualsReplay compares a state loaded from a snapshot with
// one replayed from the start, field by field.
//
// The format is binary: "FGSNAP", the format version (uvarint), then one
// zstd frame of the body and its CRC-32C (4 bytes, little endian). The body is
// varints, length-prefixed strings and times (uvarint nanosecond+1, 0 for
// the zero time, then the Unix second as a varint relative to the batch's).
// A reader refuses a version it does not know; a change to the body is a
// new version.

// SnapshotVersion is the snapshot format this build writes and reads.
const SnapshotVersion = 1

const snapshotMagic = "FGSNAP"

// Bounds of a snapshot a reader accepts (bounded everything): far above a
// sale of ten million shoppers.
const (
	maxSnapshotSize     = 2 << 30 // stored (compressed) bytes
	maxSnapshotBodySize = 8 << 30 // decompressed bytes
)

var (
	// ErrSnapshotTooNew is a snapshot of a format newer than this build's:
	// it is ignored (the sale is replayed from the start).
	ErrSnapshotTooNew = errors.New("snapshot written by a newer flashgate")
	// ErrSnapshotCorrupt is a snapshot that does not decode or does not
	// hold together.
	ErrSnapshotCorrupt = errors.New("snapshot corrupt")
)

// snapshot is a copy of a State as of a committed batch, taken between two
// batches (copySnapshot) and encoded in the background.
type snapshot struct {
	sale              string
	seq               uint64    // stream sequence of the batch
	decidedAt         time.Time // the batch's decision time
	batch             []byte    // the batch as committed (its digest is taken by encode)
	digest            [32]byte  // SHA-256 of the batch
	head              events.Head
	opensAt, closesAt time.Time
	// The tokens are shared with the live state: only the fields that never
	// change once a token is issued (id, shopper, times) are read, and
	// orderID of redeemed ones, set before they join the redeemed list.
	outstanding []*token // the expiry heap's array, copied
	redeemed    []*token // the state's redeemed list up to now (append only)
	queue       *queueSnapshot
}

// queueSnapshot is the waiting room's part of a snapshot. Most tickets of
// a big queue are waiting: of those only the place, the last sign of life
// and the status can change, and only they are copied (the id, shopper and
// pre-queue rank never change once a ticket joined, and are read from the
// tickets themselves, through the state's append-only list); any other
// ticket is copied whole.
type queueSnapshot struct {
	tat         int64
	preJoins    int
	shuffled    bool
	seed        uint64
	closed      string
	admitted    int64
	tickets     []*queue.Ticket // the state's list of tickets in join order: ID, Shopper and PreIndex only
	place, seen []int64         // by ticket
	flags       []uint8         // by ticket: ticketActive, ticketWhole
	whole       []queue.Ticket  // copies of the tickets flagged ticketWhole, in order
	claims      []string        // tickets of the admissions awaiting their claim deadline, in order
}

const (
	ticketActive = 1 << iota // the ticket is its shopper's active one (Room.Active)
	ticketWhole              // not waiting (or not as a waiting ticket is): copied whole
)

// copySnapshot copies what a snapshot of s needs, s being the state after
// the batch at stream sequence seq (decided at decidedAt, committed as
// batch). It runs between batches, so it copies only what the next batches
// may change: the expiry heap's array of pointers and what can still change
// in a ticket (the lists of redeemed tokens and of tickets only grow, and
// are shared).
func copySnapshot(s *State, sale string, seq uint64, decidedAt time.Time, batch []byte) *snapshot {
	sn := &snapshot{sale: sale, seq: seq, decidedAt: decidedAt, batch: batch, head: s.Head,
		opensAt: s.Sale.OpensAt, closesAt: s.Sale.ClosesAt,
		outstanding: append([]*token(nil), s.expiry...), redeemed: s.redeemed[:len(s.redeemed):len(s.redeemed)]}
	if q := s.q; q != nil {
		shuffled, seed := q.room.Shuffled()
		n := len(q.tickets)
		qs := &queueSnapshot{tat: q.tat, preJoins: q.preJoins, shuffled: shuffled, seed: seed, closed: q.room.Closed(),
			admitted: q.room.Admitted(), tickets: q.tickets[:n:n], place: make([]int64, n), seen: make([]int64, n),
			flags: make([]uint8, n), whole: make([]queue.Ticket, 0, max(n-q.room.Waiting(), 0)+16), claims: make([]string, len(q.claims))}
		for i, t := range q.tickets {
			qs.place[i], qs.seen[i] = t.Place, t.Seen
			if t.Status == queue.Waiting && t.Reason == "" && t.TokenID == "" && t.ClaimBy.IsZero() &&
				t.TokenIssuedAt.IsZero() && t.TokenExpiresAt.IsZero() {
				qs.flags[i] = ticketActive // a waiting ticket is always its shopper's active one
				continue
			}
			qs.flags[i] = ticketWhole
			if a, ok := q.room.Active(t.Shopper); ok && a == t {
				qs.flags[i] |= ticketActive
			}
			qs.whole = append(qs.whole, *t)
		}
		for i, t := range q.claims {
			qs.claims[i] = t.ID
		}
		sn.queue = qs
	}
	return sn
}

var (
	zstdEncoder = sync.OnceValue(func() *zstd.Encoder {
		e, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
		return e
	})
	zstdDecoder = sync.OnceValue(func() *zstd.Decoder {
		d, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxSnapshotBodySize),
			zstd.WithDecodeAllCapLimit(true)) // no more than the capacity given: the size the frame states

		return d
	})
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

// encode writes the snapshot in the current format.
func (sn *snapshot) encode() []byte {
	if sn.batch != nil {
		sn.digest = sha256.Sum256(sn.batch)
	}
	n := 64 + 80*len(sn.outstanding) + 110*len(sn.redeemed)
	if sn.queue != nil {
		n += 160 * len(sn.queue.tickets)
	}
	e := &snapEncoder{b: make([]byte, 0, n)}
	e.str(sn.sale)
	e.uvarint(sn.seq)
	e.time(sn.decidedAt)
	e.base = sn.decidedAt.Unix() // the times after it are relative to it
	e.b = append(e.b, sn.digest[:]...)
	e.head(sn.head)
	e.time(sn.opensAt)
	e.time(sn.closesAt)
	e.uvarint(uint64(len(sn.outstanding)))
	for _, t := range sn.outstanding {
		e.str(t.id)
		e.str(t.shopper)
		e.time(t.issuedAt)
		e.time(t.expiresAt)
	}
	e.uvarint(uint64(len(sn.redeemed)))
	for _, t := range sn.redeemed {
		e.str(t.id)
		e.str(t.shopper)
		e.time(t.issuedAt)
		e.time(t.expiresAt)
		e.str(t.orderID)
	}
	if q := sn.queue; q == nil {
		e.b = append(e.b, 0)
	} else {
		e.b = append(e.b, 1)
		e.varint(q.tat)
		e.uvarint(uint64(q.preJoins))
		e.bool(q.shuffled)
		e.b = binary.LittleEndian.AppendUint64(e.b, q.seed)
		e.str(q.closed)
		e.varint(q.admitted)
		e.uvarint(uint64(len(q.tickets)))
		waiting, whole := &queue.Ticket{Status: queue.Waiting}, q.whole
		for i, t := range q.tickets {
			w := waiting
			if q.flags[i]&ticketWhole != 0 {
				w, whole = &whole[0], whole[1:]
			}
			e.str(t.ID)
			e.str(t.Shopper)
			e.varint(q.place[i])
			e.varint(t.PreIndex)
			e.str(w.Status)
			e.str(w.Reason)
			e.str(w.TokenID)
			e.time(w.ClaimBy)
			e.time(w.TokenIssuedAt)
			e.time(w.TokenExpiresAt)
			e.varint(q.seen[i])
			e.bool(q.flags[i]&ticketActive != 0)
		}
		e.uvarint(uint64(len(q.claims)))
		for _, id := range q.claims {
			e.str(id)
		}
	}
	return sealSnapshot(e.b)
}

// sealSnapshot frames a snapshot's body: the magic, the version, the
// compressed body and its checksum.
func sealSnapshot(body []byte) []byte {
	body = binary.LittleEndian.AppendUint32(body, crc32.Checksum(body, castagnoli))
	out := append(make([]byte, 0, len(body)/3+16), snapshotMagic...)
	out = binary.AppendUvarint(out, SnapshotVersion)
	return zstdEncoder().EncodeAll(body, out)
}

type snapEncoder struct {
	b    []byte
	base int64 // times are written relative to this Unix second
}

func (e *snapEncoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *snapEncoder) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *snapEncoder) str(s string) {
	e.uvarint(uint64(len(s)))
	e.b = append(e.b, s...)
}
func (e *snapEncoder) bool(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}
func (e *snapEncoder) time(t time.Time) {
	if t.IsZero() {
		e.uvarint(0)
		return
	}
	e.uvarint(uint64(t.Nanosecond()) + 1)
	e.varint(t.Unix() - e.base)
}
func (e *snapEncoder) head(h events.Head) {
	e.uvarint(h.Version)
	e.uvarint(h.Cursor)
	for _, v := range []int64{h.Stock, h.Quota, h.Issued, h.Expired, h.Redeemed, h.OpensAtNs, h.ClosesAtNs} {
		e.varint(v)
	}
}

// snapshotReader is a decoded snapshot's body: its prelude (what it was
// taken at) is read by openSnapshot, the rest by restore.
type snapshotReader struct {
	sale              string
	seq               uint64
	decidedAt         time.Time
	digest            [32]byte
	head              events.Head
	opensAt, closesAt time.Time
	d                 snapDecoder
}

// openSnapshot checks a stored snapshot's format, decompresses it and
// reads its prelude.
func openSnapshot(data []byte) (*snapshotReader, error) {
	if !bytes.HasPrefix(data, []byte(snapshotMagic)) {
		return nil, fmt.Errorf("%w: not a snapshot", ErrSnapshotCorrupt)
	}
	data = data[len(snapshotMagic):]
	v, n := binary.Uvarint(data)
	switch {
	case n <= 0 || v == 0:
		return nil, fmt.Errorf("%w: no format version", ErrSnapshotCorrupt)
	case v > SnapshotVersion:
		return nil, fmt.Errorf("%w: format version %d, this build knows 1..%d", ErrSnapshotTooNew, v, SnapshotVersion)
	}
	// The frame states its size (but for the smallest bodies): check it
	// before anything is allocated, and decode no more than that (the
	// ratio bound is far above what a state's encoding compresses to).
	var fh zstd.Header
	if err := fh.Decode(data[n:]); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshotCorrupt, err)
	}
	size := uint64(64 << 10)
	if fh.HasFCS {
		size = fh.FrameContentSize
	}
	if size > maxSnapshotBodySize || size > 64*uint64(len(data))+1<<20 {
		return nil, fmt.Errorf("%w: a body of %d bytes", ErrSnapshotCorrupt, size)
	}
	body, err := zstdDecoder().DecodeAll(data[n:], make([]byte, 0, size))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshotCorrupt, err)
	}
	if len(body) < 4 || crc32.Checksum(body[:len(body)-4], castagnoli) != binary.LittleEndian.Uint32(body[len(body)-4:]) {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrSnapshotCorrupt)
	}
	r := &snapshotReader{d: snapDecoder{b: body[:len(body)-4]}}
	d := &r.d
	r.sale = d.str()
	r.seq = d.uvarint()
	r.decidedAt = d.time()
	copy(r.digest[:], d.next(32))
	d.base = r.decidedAt.Unix()
	r.head = d.head()
	r.opensAt = d.time()
	r.closesAt = d.time()
	if d.err != nil {
		return nil, d.err
	}
	return r, nil
}

// restore builds the sale's state from the snapshot. sale is the sale's
// configuration as created.
func (r *snapshotReader) restore(sale Sale) (*State, error) {
	d := &r.d
	keep := func(was, now time.Time) time.Time {
		if was.Equal(now) {
			return was // as a replay has it (the same instant, maybe in another zone)
		}
		return now
	}
	s := NewState(sale)
	s.setSchedule(keep(sale.OpensAt, r.opensAt), keep(sale.ClosesAt, r.closesAt))
	nOut := d.count(4)
	s.expiry = make(expiryHeap, 0, nOut)
	hint := nOut + int(min(max(r.head.Redeemed, 0), int64(len(d.b)-d.i)/5)) // the redeemed ones, bounded by what is left
	s.tokens = make(map[string]*token, hint)
	s.shoppers = make(map[string]*shopperState, hint)
	shopper := func(id string) *shopperState {
		sh := s.shoppers[id]
		if sh == nil {
			sh = &shopperState{}
			s.shoppers[id] = sh
		}
		return sh
	}
	for i := 0; i < nOut && d.err == nil; i++ {
		t := &token{id: d.str(), shopper: d.str(), issuedAt: d.time(), expiresAt: d.time(), heapIdx: i}
		if _, dup := s.tokens[t.id]; dup {
			return nil, fmt.Errorf("%w: token %s twice", ErrSnapshotCorrupt, t.id)
		}
		sh := shopper(t.shopper)
		if sh.token != nil {
			return nil, fmt.Errorf("%w: shopper %s holds two tokens", ErrSnapshotCorrupt, t.shopper)
		}
		sh.token = t
		s.tokens[t.id] = t
		s.expiry = append(s.expiry, t)
	}
	for i := 1; i < len(s.expiry); i++ {
		if s.expiry.Less(i, (i-1)/2) {
			return nil, fmt.Errorf("%w: the expiry order is broken at %d", ErrSnapshotCorrupt, i)
		}
	}
	nRed := d.count(5)
	s.redeemed = make([]*token, 0, nRed)
	for i := 0; i < nRed && d.err == nil; i++ {
		t := &token{id: d.str(), shopper: d.str(), issuedAt: d.time(), expiresAt: d.time(), orderID: d.str(), heapIdx: -1}
		if _, dup := s.tokens[t.id]; dup {
			return nil, fmt.Errorf("%w: token %s twice", ErrSnapshotCorrupt, t.id)
		}
		if t.orderID == "" {
			return nil, fmt.Errorf("%w: redeemed token %s without an order", ErrSnapshotCorrupt, t.id)
		}
		shopper(t.shopper).bought++
		s.tokens[t.id] = t
		s.redeemed = append(s.redeemed, t)
	}
	hasQueue := d.bool()
	if d.err != nil {
		return nil, d.err
	}
	if hasQueue != (s.q != nil) {
		return nil, fmt.Errorf("%w: waiting room %v, the sale's %v", ErrSnapshotCorrupt, hasQueue, s.q != nil)
	}
	if hasQueue {
		if err := r.restoreQueue(s); err != nil {
			return nil, err
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	if d.i != len(d.b) {
		return nil, fmt.Errorf("%w: %d bytes after the end", ErrSnapshotCorrupt, len(d.b)-d.i)
	}
	s.Head = r.head
	if int64(len(s.expiry)) != s.Head.Outstanding() || int64(len(s.redeemed)) != s.Head.Redeemed {
		return nil, fmt.Errorf("%w: %d outstanding and %d redeemed tokens, the head says %d and %d",
			ErrSnapshotCorrupt, len(s.expiry), len(s.redeemed), s.Head.Outstanding(), s.Head.Redeemed)
	}
	return s, nil
}

// restoreQueue rebuilds the waiting room. The room keeps its bookkeeping
// (the line, who is active, the counts) to itself, so it is rebuilt by
// folding the events that bring each ticket where it was: the pre-queue
// joins, the shuffle and the later joins (a first pass over the tickets),
// then each ticket's admission, claim or leave, after which it gets its
// recorded fields back (a second pass), and the queue's end; the result is
// checked against the snapshot.
func (r *snapshotReader) restoreQueue(s *State) error {
	d := &r.d
	q := s.q
	room := q.room
	tat := d.varint()
	preJoins := d.count(0)
	shuffled := d.bool()
	seed := binary.LittleEndian.Uint64(d.next(8))
	closed := d.str()
	admitted := d.varint()
	n := d.count(12) // a ticket takes 12 bytes at least
	if d.err != nil {
		return d.err
	}
	if preJoins > n {
		return fmt.Errorf("%w: %d pre-queue joins of %d tickets", ErrSnapshotCorrupt, preJoins, n)
	}
	var at time.Time
	var err error
	apply := func(shopper string, data any) {
		if err == nil {
			err = room.Apply(events.Event{Sale: s.Sale.ID, Shopper: shopper, Data: data}, at)
		}
	}
	// First pass: the joins, in order.
	start := d.i
	q.tickets = make([]*queue.Ticket, 0, n)
	for i := 0; i < n && d.err == nil && err == nil; i++ {
		if i == preJoins && shuffled {
			apply("", &events.QueueShuffled{Seed: seed, PreQueue: int64(preJoins)})
		}
		id, shopper, place, pre := d.str(), d.str(), d.varint(), d.varint()
		d.skipTicketRest()
		if i < preJoins {
			if pre != int64(i) {
				return fmt.Errorf("%w: pre-queue ticket %s of rank %d at %d", ErrSnapshotCorrupt, id, pre, i)
			}
			apply(shopper, &events.QueueJoined{Ticket: id, Place: -1, PreIndex: pre})
		} else {
			apply(shopper, &events.QueueJoined{Ticket: id, Place: place})
		}
		if t, ok := room.Ticket(id); ok && err == nil {
			q.tickets = append(q.tickets, t)
		}
	}
	if n == preJoins && shuffled {
		apply("", &events.QueueShuffled{Seed: seed, PreQueue: int64(preJoins)})
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrSnapshotCorrupt, err)
	}
	if d.err != nil {
		return d.err
	}
	// Second pass: where each ticket went, then its fields as recorded.
	d.i = start
	active := make([]bool, n)
	for i := 0; i < n && d.err == nil && err == nil; i++ {
		t := q.tickets[i]
		d.skipStr()
		d.skipStr()
		place, pre := d.varint(), d.varint()
		status, reason, tokenID := d.word(), d.word(), d.str()
		claimBy, issuedAt, expiresAt, seen := d.time(), d.time(), d.time(), d.varint()
		active[i] = d.bool()
		if tokenID != "" {
			apply(t.Shopper, &events.QueueAdmitted{Ticket: t.ID, Place: t.Place, TokenID: tokenID, ClaimBy: claimBy})
		}
		switch status {
		case queue.Waiting, queue.Admitted:
		case queue.Claimed:
			apply(t.Shopper, &events.QueueClaimed{Ticket: t.ID})
			if !active[i] {
				apply(t.Shopper, &events.PurchaseAccepted{TokenID: t.ID}) // the turn is done
			}
		case queue.Left, queue.Expired:
			apply(t.Shopper, &events.QueueLeft{Ticket: t.ID, Reason: reason})
		default:
			return fmt.Errorf("%w: ticket %s is %q", ErrSnapshotCorrupt, t.ID, status)
		}
		if err == nil && (t.Status != status || t.Place != place) {
			return fmt.Errorf("%w: ticket %s does not rebuild", ErrSnapshotCorrupt, t.ID)
		}
		t.PreIndex, t.Reason, t.TokenID, t.ClaimBy, t.TokenIssuedAt, t.TokenExpiresAt, t.Seen = pre, reason, tokenID, claimBy, issuedAt, expiresAt, seen
	}
	if closed != "" {
		apply("", &events.QueueClosed{Reason: closed})
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrSnapshotCorrupt, err)
	}
	claims := make([]string, d.count(1))
	for i := range claims {
		claims[i] = d.str()
	}
	if d.err != nil {
		return d.err
	}
	for i, t := range q.tickets {
		if a, ok := room.Active(t.Shopper); (ok && a == t) != active[i] {
			return fmt.Errorf("%w: ticket %s does not rebuild (active)", ErrSnapshotCorrupt, t.ID)
		}
	}
	if sh, sd := room.Shuffled(); sh != shuffled || sd != seed || room.Closed() != closed || room.Admitted() != admitted {
		return fmt.Errorf("%w: the waiting room does not rebuild", ErrSnapshotCorrupt)
	}
	q.preJoins, q.tat = preJoins, tat
	for _, id := range claims {
		t, ok := room.Ticket(id)
		if !ok {
			return fmt.Errorf("%w: claim of unknown ticket %s", ErrSnapshotCorrupt, id)
		}
		q.claims = append(q.claims, t)
	}
	return nil
}

// snapDecoder reads a snapshot's body; the first error sticks and every
// read after it returns zero values.
type snapDecoder struct {
	b    []byte
	i    int
	base int64
	err  error
}

func (d *snapDecoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: bad %s at byte %d", ErrSnapshotCorrupt, what, d.i)
	}
}

// next consumes n bytes; past the end it fails and returns n zero bytes
// (n is small then: the callers check longer lengths first).
func (d *snapDecoder) next(n int) []byte {
	if d.err != nil || n > len(d.b)-d.i {
		d.fail("length")
		return make([]byte, min(n, 64))
	}
	p := d.b[d.i : d.i+n]
	d.i += n
	return p
}

func (d *snapDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.i:])
	if n <= 0 {
		d.fail("number")
		return 0
	}
	d.i += n
	return v
}

func (d *snapDecoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b[d.i:])
	if n <= 0 {
		d.fail("number")
		return 0
	}
	d.i += n
	return v
}

// count reads a number of items of at least min bytes each (bounded by
// what is left).
func (d *snapDecoder) count(min int) int {
	v := d.uvarint()
	if v > uint64(len(d.b)-d.i)/uint64(max(min, 1)) {
		d.fail("count")
		return 0
	}
	return int(v)
}

func (d *snapDecoder) bool() bool {
	p := d.next(1)
	if d.err == nil && p[0] > 1 {
		d.fail("flag")
	}
	return d.err == nil && p[0] == 1
}

// skipStr passes over a string.
func (d *snapDecoder) skipStr() {
	n := d.uvarint()
	if n > uint64(len(d.b)-d.i) {
		d.fail("string")
		return
	}
	d.i += int(n)
}

// skipTicketRest passes over a ticket's fields after its pre-queue rank.
func (d *snapDecoder) skipTicketRest() {
	d.skipStr() // status
	d.skipStr() // reason
	d.skipStr() // token
	d.time()    // claim by
	d.time()    // token issued
	d.time()    // token expires
	d.varint()  // seen
	d.bool()    // active
}

func (d *snapDecoder) str() string {
	n := d.uvarint()
	if n > uint64(len(d.b)-d.i) {
		d.fail("string")
		return ""
	}
	return string(d.next(int(n)))
}

// word reads a string that is one of a few constants (a ticket's status or
// reason) without allocating one copy per ticket.
func (d *snapDecoder) word() string {
	n := d.uvarint()
	if n > uint64(len(d.b)-d.i) {
		d.fail("string")
		return ""
	}
	p := d.next(int(n))
	for _, w := range [...]string{"", queue.Waiting, queue.Admitted, queue.Claimed, queue.Left, queue.Expired,
		events.LeftByShopper, events.LeftIdle, events.LeftUnclaimed, events.ReasonLimitReached} {
		if string(p) == w {
			return w
		}
	}
	return string(p)
}

func (d *snapDecoder) time() time.Time {
	ns := d.uvarint()
	if ns == 0 || d.err != nil {
		return time.Time{}
	}
	if ns > 1e9 {
		d.fail("time")
		return time.Time{}
	}
	return time.Unix(d.varint()+d.base, int64(ns-1)).UTC()
}

func (d *snapDecoder) head() events.Head {
	h := events.Head{Version: d.uvarint(), Cursor: d.uvarint()}
	for _, p := range []*int64{&h.Stock, &h.Quota, &h.Issued, &h.Expired, &h.Redeemed, &h.OpensAtNs, &h.ClosesAtNs} {
		*p = d.varint()
	}
	return h
}
