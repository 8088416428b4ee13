package heapfloor

import (
	"errors"
	"os"
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	cases := []struct {
		name                         string
		floor, live, stacks, globals uint64
		base, want                   int
	}{
		{"no floor", 0, 10 * mib, 0, 0, 100, 100},
		{"live above the floor", 512 * mib, 600 * mib, 0, 0, 100, 100},
		{"live at the floor", 512 * mib, 512 * mib, 0, 0, 100, 100},
		{"small live heap", 1024 * mib, 12 * mib, 0, 0, 100, 8434},                      // 12 + 12*84.34 = 1024
		{"stacks and globals count", 1024 * mib, 12 * mib, 2 * mib, 2 * mib, 100, 6325}, // (1024-12)*100/16
		{"base above what the floor needs", 100 * mib, 60 * mib, 0, 0, 200, 200},
		{"GOGC off stays off", 1024 * mib, 12 * mib, 0, 0, -1, -1},
		{"empty heap: the runtime's minimum heap reaches the floor", 1024 * mib, 0, 0, 0, 100, 25600},
		{"tiny heap", 1024 * mib, 1 * mib, mib / 2, 0, 100, 25600},
		{"small floor", 4 * mib, 1 * mib, 0, 0, 100, 100},
	}
	for _, c := range cases {
		if got := Percent(c.floor, c.live, c.stacks, c.globals, c.base); got != c.want {
			t.Errorf("%s: Percent(%d, %d, %d, %d, %d) = %d, want %d", c.name, c.floor, c.live, c.stacks, c.globals, c.base, got, c.want)
		}
	}
}

// TestPercentReachesTheFloor: the goal the runtime computes from the
// percent is the floor or just above it, never below.
func TestPercentReachesTheFloor(t *testing.T) {
	goal := func(live, roots uint64, p int) uint64 { return live + roots*uint64(p)/100 }
	for _, floor := range []uint64{64 << 20, 1 << 30, 3<<30 + 12345} {
		for _, live := range []uint64{1, 4096, 3 << 20, 12<<20 + 7, 200 << 20, 511 << 20} {
			for _, extra := range []uint64{0, 1 << 20, 777777} {
				p := Percent(floor, live, extra, 0, 100)
				roots := live + extra
				g := max(goal(live, roots, p), 4<<20*uint64(p)/100) // the runtime's minimum heap
				if g < floor {
					t.Errorf("floor %d live %d: percent %d gives goal %d, below the floor", floor, live, p, g)
				}
				if p > 100 {
					if g := goal(live, roots, p-1); g >= floor+roots/100+1 {
						t.Errorf("floor %d live %d: percent %d is more than needed (goal at %d: %d)", floor, live, p, p-1, g)
					}
				}
			}
		}
	}
}

func TestAuto(t *testing.T) {
	for _, c := range []struct{ mem, want uint64 }{
		{0, 256 << 20},
		{2 << 30, 256 << 20},
		{8 << 30, 1 << 30},
		{24 << 30, 1 << 30},
	} {
		if got := Auto(c.mem); got != c.want {
			t.Errorf("Auto(%d) = %d, want %d", c.mem, got, c.want)
		}
	}
}

func TestParseAndFormat(t *testing.T) {
	for _, c := range []struct {
		in   string
		want uint64
	}{
		{"0", 0}, {"1048576", 1 << 20}, {"512MiB", 512 << 20}, {"1GiB", 1 << 30}, {"1 GiB", 1 << 30},
		{"64kib", 64 << 10}, {"2GB", 2 << 30}, {"100MB", 100 << 20}, {"4096B", 4096},
	} {
		got, err := Parse(c.in)
		if err != nil || got != c.want {
			t.Errorf("Parse(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "auto", "-1", "1.5GiB", "GiB", "12XB", "99999999999999GiB"} {
		if n, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) = %d, want an error", bad, n)
		}
	}
	for _, auto := range []string{"auto", " AUTO "} {
		if n, err := Setting(auto); err != nil || n != Auto(Memory()) {
			t.Errorf("Setting(%q) = %d, %v; want %d", auto, n, err, Auto(Memory()))
		}
	}
	if n, err := Setting("512MiB"); err != nil || n != 512<<20 {
		t.Errorf("Setting(512MiB) = %d, %v", n, err)
	}
	for _, n := range []uint64{0, 1, 1023, 1 << 10, 1536 << 10, 512 << 20, 1 << 30, 3 << 30} {
		back, err := Parse(Format(n))
		if err != nil || back != n {
			t.Errorf("Parse(Format(%d)) = Parse(%q) = %d, %v", n, Format(n), back, err)
		}
	}
}

func TestParseLimits(t *testing.T) {
	if n, ok := parseLimit([]byte("max\n")); ok {
		t.Errorf("max: %d, want none", n)
	}
	if n, ok := parseLimit([]byte("9223372036854771712\n")); ok {
		t.Errorf("cgroup v1 no-limit: %d, want none", n)
	}
	if n, ok := parseLimit([]byte("2147483648\n")); !ok || n != 2<<30 {
		t.Errorf("2 GiB limit: %d %v", n, ok)
	}
	meminfo := "MemFree:         1234 kB\nMemTotal:       24683900 kB\n"
	if n, ok := parseMemTotal([]byte(meminfo)); !ok || n != 24683900<<10 {
		t.Errorf("MemTotal: %d %v", n, ok)
	}
	if _, ok := parseMemTotal([]byte("MemFree: 1 kB\n")); ok {
		t.Error("no MemTotal line, but a total")
	}
}

func TestLimitFiles(t *testing.T) {
	got := limitFiles("12:cpu,cpuacct:/\n4:memory:/process_api/abc\n0::/system.slice/gate.service\nbad line\n")
	want := []string{
		"/sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes",
		"/sys/fs/cgroup/memory/process_api/memory.limit_in_bytes",
		"/sys/fs/cgroup/memory/memory.limit_in_bytes",
		"/sys/fs/cgroup/system.slice/gate.service/memory.max",
		"/sys/fs/cgroup/system.slice/memory.max",
		"/sys/fs/cgroup/memory.max",
		"/sys/fs/cgroup/unified/system.slice/gate.service/memory.max",
		"/sys/fs/cgroup/unified/system.slice/memory.max",
		"/sys/fs/cgroup/unified/memory.max",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("limitFiles:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := limitFiles("0::/\n"); len(got) != 2 || got[0] != "/sys/fs/cgroup/memory.max" {
		t.Errorf("root cgroup: %q", got)
	}
}

func TestStartOffWhenGOGCIsSet(t *testing.T) {
	base := gogc()
	stop, eff, err := Start(1<<30, func(k string) string {
		if k == "GOGC" {
			return "50"
		}
		return ""
	})
	defer stop()
	if !errors.Is(err, ErrGOGCSet) || eff != 0 {
		t.Fatalf("Start with GOGC set: %d, %v; want nothing and ErrGOGCSet", eff, err)
	}
	if p := gogc(); p != base {
		t.Fatalf("GOGC is %d, want %d untouched", p, base)
	}
}

// TestStartFollowsTheLiveHeap runs the tuner in this process: after each
// collection the goal comes back to the floor as the live heap changes,
// garbage below it causes no collection, and stop puts GOGC back.
func TestStartFollowsTheLiveHeap(t *testing.T) {
	if os.Getenv("GOMEMLIMIT") != "" {
		t.Skip("GOMEMLIMIT caps the floor")
	}
	const floor = 256 << 20
	base := gogc()
	stop, eff, err := Start(floor, func(string) string { return "" })
	if err != nil || eff != floor {
		t.Fatalf("Start: %d, %v", eff, err)
	}
	defer stop()
	if _, _, err := Start(floor, func(string) string { return "" }); !errors.Is(err, ErrRunning) {
		t.Fatalf("a second Start: %v, want ErrRunning", err)
	}
	// atFloor waits (10 s at most) for the tuner to see the collection
	// just run and put the goal back at the floor (or just above: the
	// runtime's minimum heap rounds up).
	atFloor := func(what string) {
		t.Helper()
		runtime.GC()
		deadline := time.Now().Add(10 * time.Second)
		for {
			g := read("/gc/heap/goal:bytes")
			if g >= floor && g <= floor*5/4 && gogc() != base {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: heap goal %d (GOGC %d) after 10 s, want about the floor %d", what, g, gogc(), floor)
			}
			time.Sleep(Poll)
		}
	}
	atFloor("small live heap")
	small := gogc()
	// 48 MiB live: with the percent of the small heap the goal would be
	// many GiB; the tuner must lower it.
	live := make([][]byte, 48)
	for i := range live {
		live[i] = make([]byte, 1<<20)
		live[i][0] = 1
	}
	atFloor("48 MiB live")
	if p := gogc(); p >= small {
		t.Errorf("GOGC %d with 48 MiB live, %d with a small heap: want it lower", p, small)
	}
	runtime.KeepAlive(live)
	live = nil
	atFloor("small again")
	// 128 MiB of garbage in 4 KiB pieces, with a live heap of a few MB:
	// under the floor, so at most one collection (one may have been due);
	// with GOGC=100 it would be a dozen or more.
	before := read("/gc/cycles/total:gc-cycles")
	var keep []byte
	for range 128 << 8 {
		keep = make([]byte, 4096)
		keep[0] = 1
	}
	runtime.KeepAlive(keep)
	if n := read("/gc/cycles/total:gc-cycles") - before; n > 1 {
		t.Errorf("%d collections for 128 MiB of garbage under a 256 MiB floor", n)
	}
	stop()
	stop() // twice is fine
	if p := gogc(); p != base {
		t.Errorf("GOGC after stop: %d, want %d", p, base)
	}
	runtime.GC() // the stopped tuner does not see it
	time.Sleep(5 * Poll)
	if p := gogc(); p != base {
		t.Errorf("GOGC after stop and a collection: %d, want %d", p, base)
	}
}
func gogc() int { return int(read("/gc/gogc:percent")) }

func read(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
