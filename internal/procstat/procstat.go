// Package procstat reads CPU time from Linux's /proc: the whole machine's
// (/proc/stat) and a process's (/proc/<pid>/stat). The load generator and
// the benchmark comparison use it to say where a run's CPU went. Elsewhere
// than Linux every read reports not ok.
package procstat

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"time"
)

// ClockTick is the unit of /proc's CPU times: USER_HZ, which Linux fixes at
// 100 for every program's view.
const ClockTick = 10 * time.Millisecond

// Machine reads the machine's busy and total CPU time, in ticks, from
// /proc/stat.
func Machine() (busy, total uint64, ok bool) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, 0, false
	}
	return ParseMachine(sc.Text())
}

// ParseMachine reads the first line of /proc/stat ("cpu user nice system
// idle iowait irq softirq steal guest guest_nice") into busy and total
// ticks. Idle and iowait are not busy; the guest times are already in user
// and nice, so they are not counted again.
func ParseMachine(line string) (busy, total uint64, ok bool) {
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, false
	}
	for i, s := range f[1:min(len(f), 9)] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, false
		}
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total, true
}

// Process is the user and system CPU time process pid has used, from
// /proc/<pid>/stat.
func Process(pid int) (time.Duration, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	return ParseProcess(string(b))
}

// ParseProcess reads utime and stime from a /proc/<pid>/stat line. They are
// the 14th and 15th fields; the 2nd, the command in parentheses, may hold
// spaces and parentheses itself, so counting starts after its last ')'.
func ParseProcess(line string) (time.Duration, bool) {
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
	return time.Duration(utime+stime) * ClockTick, true
}
