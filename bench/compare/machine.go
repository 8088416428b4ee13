package main

import (
	"time"

	"github.com/flashgate/flashgate/internal/procstat"
)

// machineBusy is the share of the machine's CPU that was busy over d, or -1
// where /proc/stat is not there. Measured while no server runs, it is what
// other processes take from the benchmark.
func machineBusy(d time.Duration) float64 {
	b0, t0, ok := procstat.Machine()
	if !ok {
		return -1
	}
	time.Sleep(d)
	b1, t1, ok := procstat.Machine()
	if !ok || t1 <= t0 {
		return -1
	}
	return float64(b1-b0) / float64(t1-t0)
}
