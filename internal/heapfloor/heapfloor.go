// Package heapfloor keeps Go's garbage collector from running while the
// heap is below a floor, and leaves it as GOGC says above it.
//
// With GOGC=100 the collector runs each time the heap doubles its live
// part. A gate starts a sale with a small live heap (a few MB) and then
// allocates fast: a token request costs about 11 KB of short-lived memory,
// so at 12,000 requests a second a 12 MB live heap was collected about 14
// times a second. With a 1 GiB floor that became about once every 5
// seconds, and the server's CPU per token request fell by about a fifth
// (from about 100 to about 80 µs on the 2-core test machine), for memory
// the machine has anyway.
//
// The floor is a heap goal, not a limit: once the live heap is above half
// of it, the goal is the one GOGC gives (twice the live heap with the
// default), exactly as without a floor. It is set after every collection
// by changing GOGC (debug.SetGCPercent) so that the next goal is the
// floor: the way TiDB's and ByteDance's GC tuners do it. GOMEMLIMIT, when
// set, still caps the heap.
//
// The price: the process's resident memory grows to about the floor, and
// the first pass of the heap through it touches pages the process never
// had, at a page fault each (about 13 µs a page on the test machine's VM,
// well under 1 µs on common hardware). After the first collection the
// same pages are used again.
package heapfloor

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Percent is the GOGC that makes the heap goal after a collection that
// left live bytes marked (plus stacks and globals bytes the collector
// scans) at least floor, and never below base (the GOGC the process has
// without a floor). The runtime's goal is live + (live + stacks +
// globals) * GOGC / 100, but at least its minimum heap, 4 MiB * GOGC /
// 100: so the percent is at most what puts that minimum at the floor,
// else a small heap would have a goal far above it.
func Percent(floor, live, stacks, globals uint64, base int) int {
	if floor <= live || base < 0 {
		return base
	}
	roots := max(live+stacks+globals, 1)
	need := (floor - live) * 100
	p := need / roots
	if need%roots != 0 {
		p++
	}
	p = min(p, (floor*100+runtimeMinHeap-1)/runtimeMinHeap, math.MaxInt32) // GOGC is an int32 inside the runtime
	return max(base, int(p))
}

// runtimeMinHeap is the runtime's minimum heap goal at GOGC=100
// (defaultHeapMinimum); it scales with GOGC.
const runtimeMinHeap = 4 << 20

// Auto is the floor serve uses by default: an eighth of the memory the
// process may use (mem), at most 1 GiB; 256 MiB when mem is 0 (unknown).
func Auto(mem uint64) uint64 {
	if mem == 0 {
		return 256 << 20
	}
	return min(mem/8, 1<<30)
}

// Memory is what the process may use: its cgroup's memory limit if it has
// one, else the machine's memory (MemTotal), else 0.
func Memory() uint64 {
	for _, f := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		if b, err := os.ReadFile(f); err == nil {
			if n, ok := parseLimit(b); ok {
				return n
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if n, ok := parseMemTotal(b); ok {
			return n
		}
	}
	return 0
}

// parseLimit reads a cgroup memory limit: a byte count, or "max" (none).
// cgroup v1 writes a huge number for none; anything over 1 PiB counts so.
func parseLimit(b []byte) (uint64, bool) {
	s := strings.TrimSpace(string(b))
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 || n > 1<<50 {
		return 0, false
	}
	return n, true
}

// parseMemTotal reads MemTotal (in kB) from /proc/meminfo.
func parseMemTotal(b []byte) (uint64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			n, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil || n == 0 {
				return 0, false
			}
			return n << 10, true
		}
	}
	return 0, false
}

// Parse reads a floor as a size: "0" (off), a byte count, or a number with
// KiB, MiB or GiB ("512MiB", "1GiB"; KB, MB and GB are taken as the same).
func Parse(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	unit := uint64(1)
	for _, u := range []struct {
		suffix string
		size   uint64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"B", 1}} {
		if len(t) > len(u.suffix) && strings.EqualFold(t[len(t)-len(u.suffix):], u.suffix) {
			t, unit = strings.TrimSpace(t[:len(t)-len(u.suffix)]), u.size
			break
		}
	}
	n, err := strconv.ParseUint(t, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size: a number of bytes, or with KiB, MiB or GiB (\"512MiB\")", s)
	}
	if n > math.MaxInt64/unit {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * unit, nil
}

// Format writes n bytes the way Parse reads them back, in the largest
// whole unit.
func Format(n uint64) string {
	switch {
	case n == 0:
		return "0"
	case n%(1<<30) == 0:
		return strconv.FormatUint(n>>30, 10) + "GiB"
	case n%(1<<20) == 0:
		return strconv.FormatUint(n>>20, 10) + "MiB"
	case n%(1<<10) == 0:
		return strconv.FormatUint(n>>10, 10) + "KiB"
	}
	return strconv.FormatUint(n, 10)
}

// Why Start did nothing.
var (
	// ErrGOGCSet: GOGC is set in the environment, and the operator's
	// choice wins.
	ErrGOGCSet = errors.New("GOGC is set in the environment")
	// ErrRunning: a floor is already kept in this process (GOGC is
	// process-wide; two tuners would undo each other).
	ErrRunning = errors.New("a heap floor is already kept in this process")
)

// running is true while a tuner runs.
var running atomic.Bool

// Start keeps the heap goal at floor or above until stop is called, which
// puts GOGC back as it was. It does nothing (and says why) when floor is 0
// or GOGC is set in the environment (getenv). With GOMEMLIMIT set, the
// floor is at most half of it, so the limit stays a limit and not the
// collector's trigger. GOGC is process-wide: one floor at a time.
func Start(floor uint64, getenv func(string) string) (stop func(), effective uint64, err error) {
	if getenv("GOGC") != "" {
		return func() {}, 0, ErrGOGCSet
	}
	if limit := debug.SetMemoryLimit(-1); limit != math.MaxInt64 && limit > 0 {
		floor = min(floor, uint64(limit)/2)
	}
	if floor == 0 {
		return func() {}, 0, nil
	}
	if !running.CompareAndSwap(false, true) {
		return func() {}, 0, ErrRunning
	}
	gogc := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(gogc)
	base := int(gogc[0].Value.Uint64())
	t := &tuner{floor: floor, base: base}
	t.adjust()
	t.arm()
	return func() {
		if t.stopped.Swap(true) {
			return
		}
		t.mu.Lock()
		defer t.mu.Unlock()
		debug.SetGCPercent(base)
		running.Store(false)
	}, floor, nil
}

// tuner sets GOGC after every collection.
type tuner struct {
	floor   uint64
	base    int
	stopped atomic.Bool
	mu      sync.Mutex // orders adjust against stop
	last    int
	samples [3]metrics.Sample
}

// sentinel is an object only the collector frees: its cleanup says that a
// collection ran.
type sentinel struct{ _ *byte }

// arm sets a cleanup on a fresh unreachable object; the next collection
// runs it, and it arms the one after.
func (t *tuner) arm() {
	runtime.AddCleanup(&sentinel{}, func(t *tuner) {
		if t.stopped.Load() {
			return
		}
		t.adjust()
		t.arm()
	}, t)
}

// adjust sets GOGC from what the last collection found live.
func (t *tuner) adjust() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped.Load() {
		return
	}
	t.samples[0].Name = "/gc/heap/live:bytes"
	t.samples[1].Name = "/gc/scan/stack:bytes"
	t.samples[2].Name = "/gc/scan/globals:bytes"
	metrics.Read(t.samples[:])
	var v [3]uint64
	for i, s := range t.samples {
		if s.Value.Kind() == metrics.KindUint64 {
			v[i] = s.Value.Uint64()
		}
	}
	if p := Percent(t.floor, v[0], v[1], v[2], t.base); p != t.last {
		debug.SetGCPercent(p)
		t.last = p
	}
}
