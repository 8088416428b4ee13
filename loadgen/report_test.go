package loadgen

import (
	"strings"
	"testing"
)

func TestTooFastNote(t *testing.T) {
	for _, tc := range []struct {
		name string
		k    *KindReport
		note bool
	}{
		{"not a mixed run", nil, false},
		{"never refused", &KindReport{Requests: 1600, Throughput: 540, Status: map[int]int64{200: 1600}}, true},
		{"refused", &KindReport{Requests: 1600, Throughput: 540, Status: map[int]int64{200: 10, 429: 1590}}, false},
		{"too few to tell", &KindReport{Requests: 30, Throughput: 540, Status: map[int]int64{200: 30}}, false},
		{"too slow to tell", &KindReport{Requests: 60, Throughput: 2, Status: map[int]int64{200: 60}}, false},
	} {
		n := tooFastNote(tc.k)
		if (n != "") != tc.note {
			t.Errorf("%s: note %q, want one: %v", tc.name, n, tc.note)
		}
		if tc.note && !strings.Contains(n, "1600 times (540 a second)") {
			t.Errorf("%s: note %q does not give the figures", tc.name, n)
		}
	}
}
