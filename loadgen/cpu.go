package loadgen

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"time"
)

// cpuSample is the CPU time this process and the machine had used at a
// moment.
type cpuSample struct {
	at      time.Time
	process time.Duration // user + system of this process
	busy    uint64        // the machine's busy jiffies (/proc/stat); 0: unknown
	total   uint64        // and all its jiffies
}

func sampleCPU(at time.Time) cpuSample {
	s := cpuSample{at: at, process: processCPU()}
	s.busy, s.total = machineJiffies()
	return s
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

// machineJiffies reads the machine's busy and total CPU time from
// /proc/stat (Linux); 0, 0 elsewhere.
func machineJiffies() (busy, total uint64) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, 0
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 5 || fields[0] != "cpu" {
		return 0, 0
	}
	// user nice system idle iowait irq softirq steal (guest time is in user)
	for i, v := range fields[1:min(len(fields), 9)] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, 0
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}
