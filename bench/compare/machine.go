package main

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"time"
)

// parseCPUStat reads the first line of /proc/stat ("cpu user nice system
// idle iowait irq softirq steal ...") into busy and total jiffies.
func parseCPUStat(line string) (busy, total uint64, ok bool) {
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, false
	}
	var idle uint64
	// user nice system idle iowait irq softirq steal; the guest times after
	// them are already in user and nice.
	for i, s := range f[1:min(len(f), 9)] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, false
		}
		total += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	return total - idle, total, true
}

func readCPUStat() (busy, total uint64, ok bool) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, 0, false
	}
	return parseCPUStat(sc.Text())
}

// machineBusy is the share of the machine's CPU that was busy over d, or -1
// where /proc/stat is not there. Measured while no server runs, it is what
// other processes take from the benchmark.
func machineBusy(d time.Duration) float64 {
	b0, t0, ok := readCPUStat()
	if !ok {
		return -1
	}
	time.Sleep(d)
	b1, t1, ok := readCPUStat()
	if !ok || t1 <= t0 {
		return -1
	}
	return float64(b1-b0) / float64(t1-t0)
}
