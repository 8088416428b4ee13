package procstat

import (
	"os"
	"runtime"
	"testing"
	"time"
)

func TestParseMachine(t *testing.T) {
	busy, total, ok := ParseMachine("cpu  100 5 50 800 40 3 2 0 0 0")
	if !ok || total != 1000 || busy != 160 {
		t.Errorf("ParseMachine = %d, %d, %v; want 160, 1000, true", busy, total, ok)
	}
	// Guest time is already in user and nice: counted once.
	if busy, total, ok := ParseMachine("cpu  100 5 50 800 40 3 2 0 70 5"); !ok || total != 1000 || busy != 160 {
		t.Errorf("ParseMachine with guest time = %d, %d, %v; want 160, 1000, true", busy, total, ok)
	}
	for _, bad := range []string{"", "cpu0 1 2 3 4 5", "cpu 1 2 x 4 5", "cpu 1 2"} {
		if _, _, ok := ParseMachine(bad); ok {
			t.Errorf("ParseMachine(%q) accepted", bad)
		}
	}
}

func TestParseProcess(t *testing.T) {
	for _, c := range []struct {
		line string
		want time.Duration
		ok   bool
	}{
		// utime 250 and stime 70 ticks (the 14th and 15th fields).
		{"4242 (flashgate) S 1 4242 4242 0 -1 4194560 8012 0 0 0 250 70 0 0 20 0 9 0 123 1 2 3\n", 3200 * time.Millisecond, true},
		// A command with spaces and parentheses does not shift the fields.
		{"77 (a (b) c) R 1 77 77 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 9 1 2\n", 30 * time.Millisecond, true},
		{"77 (short) R 1 2 3\n", 0, false},
		{"no parenthesis here", 0, false},
		{"77 (x) R 1 77 77 0 -1 0 0 0 0 0 one 2 0 0\n", 0, false},
	} {
		got, ok := ParseProcess(c.line)
		if got != c.want || ok != c.ok {
			t.Errorf("ParseProcess(%q) = %v, %v; want %v, %v", c.line, got, ok, c.want, c.ok)
		}
	}
}

// TestReads reads this process's and the machine's CPU time and sees both
// grow with work done.
func TestReads(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux's")
	}
	pid := os.Getpid()
	before, ok := Process(pid)
	busy0, _, mok := Machine()
	if !ok || !mok {
		t.Fatalf("could not read /proc: process %v, machine %v", ok, mok)
	}
	// Work until the ticks (10 ms each) show it, for at most 10 s.
	deadline := time.Now().Add(10 * time.Second)
	x := 0
	for {
		for i := 0; i < 1e6; i++ {
			x += i % 7
		}
		after, ok := Process(pid)
		busy1, _, mok := Machine()
		if !ok || !mok {
			t.Fatal("could not read /proc again")
		}
		if after >= before+20*time.Millisecond && busy1 >= busy0+2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU time stayed at %v (from %v), machine busy %d (from %d), after busy work (%d)", after, before, busy1, busy0, x)
		}
	}
	if _, ok := Process(1 << 30); ok {
		t.Error("a process that does not exist was read")
	}
}
