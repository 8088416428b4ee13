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
		{0.25, 10 * time.Millisecond, 5001, 10000, 0, "more than half of the ready lag behind: catch up"},
		{0.25, 10 * time.Millisecond, 5000, 10000, 30 * time.Millisecond, "half of the ready lag: still paced"},
	} {
		if got := projectionPause(c.share, c.took, c.lag, c.max); got != c.want {
			t.Errorf("%s: pause %v, want %v", c.situation, got, c.want)
		}
	}
}
