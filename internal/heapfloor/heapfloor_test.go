package heapfloor

import (
	"errors"
	"runtime"
	"runtime/metrics"
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

func TestStartOffWhenGOGCIsSet(t *testing.T) {
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
	if p := gogc(); p != 100 {
		t.Fatalf("GOGC is %d, want 100 untouched", p)
	}
}

// TestStartRaisesTheGoal runs the tuner in this process: the heap goal
// rises to the floor, garbage below it causes no collection, and stop puts
// GOGC back.
func TestStartRaisesTheGoal(t *testing.T) {
	const floor = 256 << 20
	stop, eff, err := Start(floor, func(string) string { return "" })
	if err != nil || eff != floor {
		t.Fatalf("Start: %d, %v", eff, err)
	}
	if _, _, err := Start(floor, func(string) string { return "" }); !errors.Is(err, ErrRunning) {
		t.Fatalf("a second Start: %v, want ErrRunning", err)
	}
	runtime.GC() // the tuner adjusts after each collection
	deadline := time.Now().Add(10 * time.Second)
	for read("/gc/heap/goal:bytes") < floor || gogc() == 100 {
		if time.Now().After(deadline) {
			t.Fatalf("heap goal %d after 10 s, want at least the floor %d (GOGC %d)", read("/gc/heap/goal:bytes"), floor, gogc())
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	// The goal is the floor, not far above it (the runtime's minimum heap
	// grows with GOGC).
	if g := read("/gc/heap/goal:bytes"); g > floor*5/4 {
		t.Fatalf("heap goal %d, want about the floor %d (GOGC %d)", g, floor, gogc())
	}
	// 64 MiB of garbage in 4 KiB pieces: under the floor, so at most one
	// collection (one may already have been due); with GOGC=100 and this
	// test's few MB live, it would be a dozen or more.
	before := read("/gc/cycles/total:gc-cycles")
	var keep []byte
	for range 64 << 8 {
		keep = make([]byte, 4096)
		keep[0] = 1
	}
	runtime.KeepAlive(keep)
	if n := read("/gc/cycles/total:gc-cycles") - before; n > 1 {
		t.Errorf("%d collections for 64 MiB of garbage under a 256 MiB floor", n)
	}
	stop()
	stop() // twice is fine
	if p := gogc(); p != 100 {
		t.Errorf("GOGC after stop: %d, want 100", p)
	}
	runtime.GC() // a pending cleanup of the stopped tuner changes nothing
	time.Sleep(10 * time.Millisecond)
	if p := gogc(); p != 100 {
		t.Errorf("GOGC after stop and a collection: %d, want 100", p)
	}
}

func gogc() int { return int(read("/gc/gogc:percent")) }

func read(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
