// Package queue holds the pure parts of a sale's waiting room: the
// admission order (shoppers who joined before opening in an order drawn from
// a recorded seed, everyone after in arrival order) and the line of who is
// still waiting, which answers "how many are ahead of me" in O(log n) for a
// million waiting shoppers.
//
// It is groundwork for the waiting room (issue 4): the writer, the front and
// the audit will share it, so that a shopper's position, the writer's
// admissions and the auditor's check all follow one order.
package queue

import (
	"encoding/binary"
	"math/rand/v2"
)

// Permutation returns the admission order of n shoppers who joined before
// the opening: order[i] is the place (0-based) of the i-th to join. It is a
// Fisher-Yates shuffle driven by ChaCha8 keyed with seed, so the same seed
// and n always give the same order, and anyone holding the recorded seed
// can recompute it.
func Permutation(seed [32]byte, n int) []int32 {
	order := make([]int32, n)
	for i := range order {
		order[i] = int32(i)
	}
	r := rand.New(rand.NewChaCha8(seed))
	r.Shuffle(n, func(i, j int) { order[i], order[j] = order[j], order[i] })
	return order
}

// SeedOf expands a 64-bit seed (as an event records it) into a ChaCha8 key.
func SeedOf(s uint64) [32]byte {
	var k [32]byte
	binary.LittleEndian.PutUint64(k[:8], s)
	copy(k[8:], "flashgate waiting room v1")
	return k
}

// Line is the places of a queue, 0 to Len()-1, each waiting or not. Places
// are only ever appended; a place stops waiting once (admitted, left, or
// dropped) and never waits again. Ahead and Next take O(log n); memory is 4
// bytes a place. The zero Line is empty and ready to use.
type Line struct {
	tree    []int32 // Fenwick tree over places, 1-based: tree[i] sums waiting in (i - i&-i, i]
	waiting []bool
	count   int // places waiting
}

// Len is the number of places ever added.
func (l *Line) Len() int { return len(l.waiting) }

// Waiting is the number of places still waiting.
func (l *Line) Waiting() int { return l.count }

// IsWaiting reports whether place p is waiting.
func (l *Line) IsWaiting(p int) bool { return p >= 0 && p < len(l.waiting) && l.waiting[p] }

// Add appends a waiting place and returns it.
func (l *Line) Add() int {
	p := len(l.waiting)
	l.waiting = append(l.waiting, true)
	i := p + 1 // Fenwick index
	// tree[i] covers (i - lowbit(i), i]: this place plus the places
	// (i - lowbit(i), i-1], whose sum is prefix(i-1) - prefix(i-lowbit(i)).
	v := int32(1) + l.prefix(i-1) - l.prefix(i-(i&-i))
	l.tree = append(l.tree, v)
	l.count++
	return p
}

// Grow appends n waiting places at once and returns the first, in O(n).
func (l *Line) Grow(n int) int {
	first := len(l.waiting)
	for range n {
		l.Add()
	}
	return first
}

// Remove marks place p as no longer waiting; it reports false if p was not
// waiting.
func (l *Line) Remove(p int) bool {
	if !l.IsWaiting(p) {
		return false
	}
	l.waiting[p] = false
	l.count--
	for i := p + 1; i <= len(l.tree); i += i & -i {
		l.tree[i-1]--
	}
	return true
}

// Ahead is the number of places before p that are still waiting.
func (l *Line) Ahead(p int) int {
	if p > len(l.tree) {
		p = len(l.tree)
	}
	return int(l.prefix(p))
}

// prefix sums the places 0..i-1 that wait.
func (l *Line) prefix(i int) int32 {
	var s int32
	for ; i > 0; i -= i & -i {
		s += l.tree[i-1]
	}
	return s
}

// Next returns the first waiting place at or after from.
func (l *Line) Next(from int) (int, bool) {
	if from < 0 {
		from = 0
	}
	if from >= len(l.waiting) {
		return 0, false
	}
	// The place holding the (k+1)-th waiting one, k = waiting before from.
	k := l.prefix(from)
	if int(k) >= l.count {
		return 0, false
	}
	// Fenwick descent: the largest index whose prefix is <= k.
	pos, rem := 0, k
	for step := highBit(len(l.tree)); step > 0; step >>= 1 {
		if n := pos + step; n <= len(l.tree) && l.tree[n-1] <= rem {
			pos = n
			rem -= l.tree[n-1]
		}
	}
	return pos, true // place pos (0-based) is index pos+1
}

func highBit(n int) int {
	b := 1
	for b<<1 <= n {
		b <<= 1
	}
	return b
}
