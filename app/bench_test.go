package app_test

import (
	"encoding/json"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime/pprof"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashgate/flashgate/app"
	"github.com/flashgate/flashgate/internal/fgtest"
)

var tokenProfile = flag.String("tokenprofile", "", "BenchmarkTokenRequest writes a CPU profile of its measured part (without the sessions made before it) to this file")

// BenchmarkTokenRequest is the token-issue path of the HTTP flood without
// the network: distinct shoppers ask a sale for a token through the
// service's handler, 32 goroutines a core (64 on the 2-core test machine,
// as the comparison's flood), and every answer must be a new token (201).
// Behind the handler everything is real: the front, the embedded
// JetStream file store, the sale's writer and the views. It reports the
// process's CPU per request (cpu-µs/op), about 2.5 µs of which is the
// benchmark's own (building each request and its recorder, pprof says).
//
// Two things set it apart from a served flood besides net/http and the
// kernel's TCP: the views yield to it as to any flood, and their 10% of a
// core spreads over 3-4 times as many requests a second; and the process
// next to it is no load generator taking its caches and cores. So a served
// request costs more than this plus the bare handler's CPU.
//
//	go test -run XXX -bench BenchmarkTokenRequest -benchtime 100000x ./app/
func BenchmarkTokenRequest(b *testing.B) {
	fgtest.HeapFloor(b) // as a served process has it by the time a flood comes
	a := startApp(b, app.Config{})
	c := newClient(b, a)
	c.createSale(a.AdminToken, map[string]any{"id": "bench", "stock": 100_000_000})
	h := a.Handler()
	// One session per request, made before the clock starts.
	sessions := make([]string, b.N)
	for i := range sessions {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("POST", "/api/v1/session", nil))
		var s struct{ Session string }
		if w.Code != http.StatusCreated || json.Unmarshal(w.Body.Bytes(), &s) != nil || s.Session == "" {
			b.Fatalf("session %d: %d %s", i, w.Code, w.Body)
		}
		sessions[i] = "Bearer " + s.Session
	}
	var (
		next   atomic.Int64
		failed atomic.Value
	)
	b.SetParallelism(32)
	b.ReportAllocs()
	if *tokenProfile != "" {
		f, err := os.Create(*tokenProfile)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	start, cpu0 := time.Now(), fgtest.CPUTime(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1) - 1
			r := httptest.NewRequest("POST", "/api/v1/sales/bench/tokens", nil)
			r.Header.Set("Authorization", sessions[i])
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != http.StatusCreated {
				failed.CompareAndSwap(nil, "request "+strconv.FormatInt(i, 10)+": "+strconv.Itoa(w.Code)+" "+w.Body.String())
			}
		}
	})
	b.StopTimer()
	if f := failed.Load(); f != nil {
		b.Fatal(f)
	}
	n := float64(b.N)
	b.ReportMetric(float64(fgtest.CPUTime(b)-cpu0)/1e3/n, "cpu-µs/op")
	b.ReportMetric(n/time.Since(start).Seconds(), "req/s")
}
