package fgtest

import (
	"syscall"
	"testing"
	"time"
)

// CPUTime is the CPU time the process has used, user and system: on a
// shared machine a benchmark reports it to tell its cost apart from the
// wait for a core.
func CPUTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
