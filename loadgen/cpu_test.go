package loadgen

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// TestProcessesCPU reads this process's CPU time the way a run reads the
// server's, and sees it grow with work done.
func TestProcessesCPU(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/<pid>/stat is Linux's")
	}
	pid := os.Getpid()
	before, ok := processesCPU([]int{pid})
	if !ok {
		t.Fatal("could not read this process's /proc/<pid>/stat")
	}
	// Work until the ticks (10 ms each) show it, for at most 10 s of CPU.
	deadline := time.Now().Add(10 * time.Second)
	x := 0
	for {
		for i := 0; i < 1e6; i++ {
			x += i % 7
		}
		after, ok := processesCPU([]int{pid, pid})
		if !ok {
			t.Fatal("could not read it again")
		}
		if after >= 2*(before+20*time.Millisecond) { // the same process twice counts twice
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU time stayed at %v (from %v) after busy work (%d)", after, before, x)
		}
	}
	if _, ok := processesCPU([]int{pid, 1 << 30}); ok {
		t.Error("a process that does not exist was read")
	}
}

func TestServerCPU(t *testing.T) {
	at := time.Unix(1000, 0)
	a := cpuSample{at: at, servers: 3 * time.Second, srvOK: true}
	b := cpuSample{at: at.Add(4 * time.Second), servers: 9 * time.Second, srvOK: true}
	// 6 CPU-seconds in 4 s, over 40,000 requests: 150 µs each.
	got := serverCPU([]int{7}, a, b, 2, 40000)
	if got == nil || got.Seconds != 6 || got.Cores != 1.5 || got.Share != 0.75 || got.PerRequestMicros != 150 || len(got.PIDs) != 1 {
		t.Fatalf("serverCPU = %+v; want 6 s, 1.5 cores, 0.75 of 2 CPUs, 150 µs a request", got)
	}
	if serverCPU(nil, a, b, 2, 40000) != nil {
		t.Error("figures without pids")
	}
	if serverCPU([]int{7}, a, b, 2, 0) != nil {
		t.Error("figures for a phase that measured no request")
	}
	b.srvOK = false
	if serverCPU([]int{7}, a, b, 2, 40000) != nil {
		t.Error("figures from a sample that could not be read")
	}
}
