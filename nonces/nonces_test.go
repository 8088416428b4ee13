package nonces_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/internal/fgtest"
	"github.com/flashgate/flashgate/nonces"
	"github.com/nats-io/nats.go/jetstream"
)

func bucket(t *testing.T, env *fgtest.Env) jetstream.KeyValue {
	t.Helper()
	kv, err := env.JS.KeyValue(context.Background(), events.OnceBucket)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func TestUseOnceAcrossStores(t *testing.T) {
	env := fgtest.New(t)
	kv := bucket(t, env)
	ctx := context.Background()
	a, b := nonces.New(kv, nonces.Config{}), nonces.New(kv, nonces.Config{})
	first, err := a.Use(ctx, "pow.0123")
	if err != nil || !first {
		t.Fatalf("first use: %v %v", first, err)
	}
	// The same value at "another process" (a store with no local memory of it).
	if again, err := b.Use(ctx, "pow.0123"); err != nil || again {
		t.Fatalf("second use elsewhere: %v %v", again, err)
	}
	if again, err := a.Use(ctx, "pow.0123"); err != nil || again {
		t.Fatalf("second use here: %v %v", again, err)
	}
	if first, err := b.Use(ctx, "pow.0124"); err != nil || !first {
		t.Fatalf("another value: %v %v", first, err)
	}
}

// TestOneWinnerUnderRace: many processes racing for one value, one wins.
func TestOneWinnerUnderRace(t *testing.T) {
	env := fgtest.New(t)
	kv := bucket(t, env)
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := nonces.New(kv, nonces.Config{})
			for v := 0; v < 50; v++ {
				ok, err := s.Use(context.Background(), fmt.Sprintf("v%d", v))
				if err != nil {
					t.Error(err)
				}
				if ok {
					wins.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 50 {
		t.Fatalf("%d first uses of 50 values", wins.Load())
	}
}

func TestLocalMemoryBounded(t *testing.T) {
	env := fgtest.New(t)
	kv := bucket(t, env)
	now := time.Unix(1_800_000_000, 0)
	s := nonces.New(kv, nonces.Config{MaxLocal: 10, TTL: time.Minute, Now: func() time.Time { return now }})
	for i := 0; i < 25; i++ {
		if ok, err := s.Use(context.Background(), fmt.Sprint(i)); err != nil || !ok {
			t.Fatal(ok, err)
		}
	}
	if s.Len() != 10 {
		t.Fatalf("local memory holds %d, bound 10", s.Len())
	}
	// Values beyond the local bound are still refused (by the bucket).
	if ok, _ := s.Use(context.Background(), "24"); ok {
		t.Fatal("a value the local memory dropped was accepted twice")
	}
	now = now.Add(2 * time.Minute) // local entries expire and are swept on the next add
	if ok, _ := s.Use(context.Background(), "new"); !ok {
		t.Fatal("a new value refused")
	}
	if s.Len() != 1 {
		t.Fatalf("after expiry the local memory holds %d", s.Len())
	}
}

func TestUnavailable(t *testing.T) {
	env := fgtest.New(t)
	kv := bucket(t, env)
	s := nonces.New(kv, nonces.Config{})
	env.Server.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ok, err := s.Use(ctx, "x")
	if err == nil || ok {
		t.Fatalf("with NATS down: %v %v, want an error", ok, err)
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		t.Fatal("NATS down taken for a used value")
	}
}

func TestKeyIsValidKVKey(t *testing.T) {
	for _, v := range []string{"", "a b", "sig.app.nonce", "\x00\xff", "pow.*>"} {
		k := nonces.Key(v)
		if len(k) != 40 {
			t.Fatalf("Key(%q) = %q", v, k)
		}
		for _, c := range k {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				t.Fatalf("Key(%q) = %q", v, k)
			}
		}
	}
}

func TestForgetAllowsOneMoreUse(t *testing.T) {
	env := fgtest.New(t)
	kv := bucket(t, env)
	ctx := context.Background()
	a, b := nonces.New(kv, nonces.Config{}), nonces.New(kv, nonces.Config{})
	if ok, err := a.Use(ctx, "v"); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if err := a.Forget(ctx, "v"); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.Use(ctx, "v"); !ok || err != nil {
		t.Fatalf("after Forget, at another process: %v %v", ok, err)
	}
	if ok, _ := a.Use(ctx, "v"); ok {
		t.Fatal("used a third time")
	}
}
