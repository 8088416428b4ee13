package app

import (
	"testing"
	"time"
)

func TestProjectionPause(t *testing.T) {
	for _, c := range []struct {
		share     float64
		took      time.Duration
		lag, max  uint64
		want      time.Duration
		situation string
	}{
		{0.25, 10 * time.Millisecond, 0, 10000, 30 * time.Millisecond, "a quarter of a core: three times the work's time"},
		{0.5, 10 * time.Millisecond, 4000, 10000, 10 * time.Millisecond, "half: as long as the work"},
		{0.25, 800 * time.Millisecond, 0, 10000, time.Second, "at most a second"},
		{1, 10 * time.Millisecond, 0, 10000, 0, "no limit"},
		{0.25, 10 * time.Millisecond, 10001, 10000, 0, "more than the flood lag behind: catch up"},
		{0.25, 10 * time.Millisecond, 10000, 10000, 30 * time.Millisecond, "the flood lag: still paced"},
	} {
		if got := projectionPause(c.share, c.took, c.lag, c.max); got != c.want {
			t.Errorf("%s: pause %v, want %v", c.situation, got, c.want)
		}
	}
}

func TestLagBound(t *testing.T) {
	for _, c := range []struct {
		ready, flood uint64
		behind       bool
		want         uint64
	}{
		{10000, 50000, false, 10000},
		{10000, 50000, true, 60000}, // headroom above where the views stop yielding: no flapping
		{10000, 5000, true, 15000},
	} {
		if got := lagBound(c.ready, c.flood, c.behind); got != c.want {
			t.Errorf("lagBound(%d, %d, %v) = %d, want %d", c.ready, c.flood, c.behind, got, c.want)
		}
	}
}
