package loadgen

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"time"
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
	s.busy, s.total = machineJiffies()
	return s
}

// clockTick is the unit of /proc/<pid>/stat's CPU times: USER_HZ, which
// Linux fixes at 100 for every program's view.
const clockTick = 10 * time.Millisecond

// processesCPU is the user and system CPU time the processes pids have used
// (Linux: /proc/<pid>/stat); ok is false if one could not be read.
func processesCPU(pids []int) (sum time.Duration, ok bool) {
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return 0, false
		}
		d, ok := parseProcStat(string(b))
		if !ok {
			return 0, false
		}
		sum += d
	}
	return sum, true
}

// parseProcStat reads utime and stime from a /proc/<pid>/stat line. They
// are the 14th and 15th fields; the 2nd, the command in parentheses, may
// hold spaces and parentheses itself, so counting starts after its last ')'.
func parseProcStat(line string) (time.Duration, bool) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(line[i+1:]) // from the 3rd field, state
	if len(f) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(utime+stime) * clockTick, true
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
