package front

import (
	"strconv"
	"testing"

	"github.com/flashgate/flashgate/events"
)

func TestRecentKeepsTheLastN(t *testing.T) {
	r := newRecent(3)
	ev := func(i int) events.Event {
		return events.Event{ID: "d" + strconv.Itoa(i), Request: "r" + strconv.Itoa(i)}
	}
	for i := 1; i <= 3; i++ {
		r.put("r"+strconv.Itoa(i), ev(i))
	}
	r.put("r2", ev(9)) // a second decision for a request kept is ignored: the first stands
	r.put("r4", ev(4)) // pushes out r1, the oldest
	if _, ok := r.get("r1"); ok {
		t.Fatal("r1 is still kept after three newer decisions")
	}
	for i, want := range map[string]string{"r2": "d2", "r3": "d3", "r4": "d4"} {
		if e, ok := r.get(i); !ok || e.ID != want {
			t.Fatalf("get(%s) = %q, %v; want %s", i, e.ID, ok, want)
		}
	}
	r.put("r5", ev(5))
	r.put("r6", ev(6))
	if _, ok := r.get("r2"); ok {
		t.Fatal("r2 is still kept after three newer decisions")
	}
	if _, ok := r.get("r4"); !ok {
		t.Fatal("r4 was pushed out early")
	}
	if len(r.m) != 3 {
		t.Fatalf("the index holds %d requests, want 3", len(r.m))
	}
}
