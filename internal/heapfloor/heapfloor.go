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
// default), exactly as without a floor. After every collection GOGC is set
// (debug.SetGCPercent) so that the next goal is the floor, as TiDB's and
// ByteDance's GC tuners do. A goroutine notices each collection within
// Poll (the runtime's own end-of-cycle hooks, finalizers and cleanups, run
// only once the sweep is over, which under a saturated CPU is often the
// next cycle). Until it has, the runtime computes the goal with the last
// percent: if the live heap grew a lot in one cycle the goal overshoots
// the floor for at most Poll. GOMEMLIMIT, when set, still caps the heap.
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
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
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

// Memory is what the process may use: the smallest memory limit of its
// cgroup and the cgroups above it (v2 memory.max, v1
// memory.limit_in_bytes), else the machine's memory (MemTotal), else 0.
func Memory() uint64 {
	cg, _ := os.ReadFile("/proc/self/cgroup")
	var limit uint64
	for _, f := range limitFiles(string(cg)) {
		if b, err := os.ReadFile(f); err == nil {
			if n, ok := parseLimit(b); ok && (limit == 0 || n < limit) {
				limit = n
			}
		}
	}
	if limit > 0 {
		return limit
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if n, ok := parseMemTotal(b); ok {
			return n
		}
	}
	return 0
}

// limitFiles are the memory limit files of the cgroups in
// /proc/self/cgroup (its text) and of every cgroup above them, where the
// usual mounts put them: cgroup v2 at /sys/fs/cgroup (or its unified
// directory on a hybrid host), v1's memory controller at
// /sys/fs/cgroup/memory. Inside a container the path may not exist under
// the mount; the parents then bring the mount's own root, which is the
// container's cgroup.
func limitFiles(procCgroup string) []string {
	var files []string
	walk := func(base, path, file string) {
		for dir := filepath.Clean("/" + path); ; dir = filepath.Dir(dir) {
			files = append(files, filepath.Join(base, dir, file))
			if dir == "/" {
				return
			}
		}
	}
	for _, line := range strings.Split(procCgroup, "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		switch {
		case f[0] == "0" && f[1] == "":
			walk("/sys/fs/cgroup", f[2], "memory.max")
			walk("/sys/fs/cgroup/unified", f[2], "memory.max")
		case slices.Contains(strings.Split(f[1], ","), "memory"):
			walk("/sys/fs/cgroup/memory", f[2], "memory.limit_in_bytes")
		}
	}
	return files
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
// KiB, MiB or GiB ("512MiB", "1GiB"), in any case. KB, MB and GB are read
// as KiB, MiB and GiB (powers of 1024), as memory sizes usually are.
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

// Setting reads a floor setting: "auto" (in any case: Auto of Memory) or
// a size (Parse).
func Setting(s string) (uint64, error) {
	if strings.EqualFold(strings.TrimSpace(s), "auto") {
		return Auto(Memory()), nil
	}
	return Parse(s)
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

// Poll is how often the tuner looks for a finished collection.
const Poll = 20 * time.Millisecond

// Start keeps the heap goal at floor or above until stop is called, which
// puts GOGC back as it was. It does nothing (and says why) when floor is 0
// or GOGC is set in the environment (getenv). With GOMEMLIMIT set (read
// once, here), the floor is at most half of it, so the limit stays a limit
// and not the collector's trigger. GOGC is process-wide: one floor at a
// time, and nothing else should set it meanwhile.
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
	t := &tuner{floor: floor, quit: make(chan struct{}), done: make(chan struct{})}
	t.samples[0].Name = "/gc/cycles/total:gc-cycles"
	t.samples[1].Name = "/gc/heap/live:bytes"
	t.samples[2].Name = "/gc/scan/stack:bytes"
	t.samples[3].Name = "/gc/scan/globals:bytes"
	t.samples[4].Name = "/gc/gogc:percent"
	metrics.Read(t.samples[:])
	t.base = int(t.samples[4].Value.Uint64()) // off reads as 2^64-1: -1
	t.last = t.base
	t.adjust() // if a collection ran already; else at the first one
	go t.run()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(t.quit)
			<-t.done
			debug.SetGCPercent(t.base)
			running.Store(false)
		})
	}, floor, nil
}

// tuner sets GOGC after every collection.
type tuner struct {
	floor      uint64
	base, last int
	cycles     uint64 // the collections seen
	samples    [5]metrics.Sample
	quit, done chan struct{}
}

func (t *tuner) run() {
	defer close(t.done)
	tick := time.NewTicker(Poll)
	defer tick.Stop()
	for {
		select {
		case <-t.quit:
			return
		case <-tick.C:
			t.adjust()
		}
	}
}

// adjust sets GOGC from what the last collection found live, if one ran
// since it last looked.
func (t *tuner) adjust() {
	metrics.Read(t.samples[:4])
	cycles := t.samples[0].Value.Uint64()
	if cycles == t.cycles {
		return
	}
	t.cycles = cycles
	live, stacks, globals := t.samples[1].Value.Uint64(), t.samples[2].Value.Uint64(), t.samples[3].Value.Uint64()
	if p := Percent(t.floor, live, stacks, globals, t.base); p != t.last {
		debug.SetGCPercent(p)
		t.last = p
	}
}
