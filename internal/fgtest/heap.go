package fgtest

import (
	"os"
	"runtime"
	"sync"
	"testing"

	"github.com/flashgate/flashgate/internal/heapfloor"
)

var heapOnce sync.Once

// HeapFloor gives the test process serve's default heap floor, with its
// pages written once, so that a benchmark's collector runs as often as a
// served process's does and the first pass through the floor's fresh pages
// (a page fault each, about 13 µs on the 2-core test machine) is not what
// gets measured. It is done once per process and kept to its end (the
// pages stay the process's): call it before the clock starts.
func HeapFloor(tb testing.TB) {
	tb.Helper()
	heapOnce.Do(func() {
		_, floor, err := heapfloor.Start(heapfloor.Auto(heapfloor.Memory()), os.Getenv)
		if err != nil {
			tb.Logf("no heap floor: %v", err)
			return
		}
		touchHeap(floor)
	})
}

// touchHeap has the Go heap grow to n bytes of pages written once, then
// frees them for the heap's reuse.
func touchHeap(n uint64) {
	const chunk = 1 << 20
	hold := make([][]byte, 0, n/chunk)
	for range n / chunk {
		c := make([]byte, chunk)
		for i := 0; i < chunk; i += 4096 {
			c[i] = 1
		}
		hold = append(hold, c)
	}
	hold = nil
	runtime.GC()
}
