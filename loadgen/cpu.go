package loadgen

import (
	"time"

	"github.com/flashgate/flashgate/internal/procstat"
)

// cpuSample is the CPU time this process, the server's processes and the
// machine had used at a moment.
type cpuSample struct {
	at      time.Time
	process time.Duration // user + system of this process
	servers time.Duration // user + system of the server's processes (Options.ServerPIDs)
	srvOK   bool          // servers was read for every one of them
	busy    uint64        // the machine's busy jiffies (/proc/stat); 0: unknown
	total   uint64        // and all its jiffies
}

func sampleCPU(at time.Time, pids []int) cpuSample {
	s := cpuSample{at: at, process: processCPU()}
	if len(pids) > 0 {
		s.servers, s.srvOK = processesCPU(pids)
	}
	s.busy, s.total, _ = procstat.Machine() // 0, 0 where unknown
	return s
}

// processesCPU is the user and system CPU time the processes pids have used
// (Linux: /proc/<pid>/stat); ok is false if one could not be read.
func processesCPU(pids []int) (sum time.Duration, ok bool) {
	for _, pid := range pids {
		d, ok := procstat.Process(pid)
		if !ok {
			return 0, false
		}
		sum += d
	}
	return sum, true
}

// cpuShares are the process's and the machine's CPU use between a and b,
// each a share of the whole machine (0..1); machine is -1 when unknown.
func cpuShares(a, b cpuSample, numCPU int) (process, machine float64) {
	wall := b.at.Sub(a.at)
	if wall > 0 && numCPU > 0 {
		process = float64(b.process-a.process) / float64(wall) / float64(numCPU)
	}
	machine = -1
	if a.total > 0 && b.total > a.total {
		machine = float64(b.busy-a.busy) / float64(b.total-a.total)
	}
	return process, machine
}
