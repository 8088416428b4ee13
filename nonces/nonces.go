// Package nonces remembers single-use values — solved puzzles, CAPTCHA
// answers, signature nonces — across every flashgate process, so that a value
// used once is refused the second time wherever it arrives.
//
// The truth is the FLASHGATE_ONCE bucket: using a value is a KV Create of a
// key derived from it, which only one caller in the whole installation can
// win. Entries expire after events.OnceTTL, longer than any single-use
// value's validity, so the bucket stays small. A small local memory of values
// this process has seen answers a replay without a round trip to NATS.
package nonces

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Store is the installation-wide memory of used values.
type Store struct {
	kv    jetstream.KeyValue
	ttl   time.Duration
	now   func() time.Time
	local local
}

// Config configures a Store.
type Config struct {
	// TTL is how long a value stays remembered locally; use the bucket's TTL.
	TTL time.Duration
	// MaxLocal bounds the local memory (default 100,000 values); beyond it
	// values are only in the bucket.
	MaxLocal int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// New returns a store over the FLASHGATE_ONCE bucket kv.
func New(kv jetstream.KeyValue, c Config) *Store {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.MaxLocal <= 0 {
		c.MaxLocal = 100_000
	}
	if c.TTL <= 0 {
		c.TTL = 5 * time.Minute
	}
	return &Store{kv: kv, ttl: c.TTL, now: c.Now, local: local{max: c.MaxLocal, seen: make(map[string]int64)}}
}

// Use records value and reports whether this was its first use anywhere.
// An error means NATS could not be asked; the caller must not accept the
// value then.
func (s *Store) Use(ctx context.Context, value string) (bool, error) {
	key := Key(value)
	now := s.now()
	if s.local.has(key, now) {
		return false, nil
	}
	_, err := s.kv.Create(ctx, key, []byte{1})
	switch {
	case err == nil:
		s.local.add(key, now, s.ttl)
		return true, nil
	case errors.Is(err, jetstream.ErrKeyExists):
		s.local.add(key, now, s.ttl)
		return false, nil
	}
	return false, fmt.Errorf("nonces: %w", err)
}

// Forget removes a value's use, so it may be used once more: for a value
// accepted by a request that could then not be taken.
func (s *Store) Forget(ctx context.Context, value string) error {
	key := Key(value)
	s.local.mu.Lock()
	delete(s.local.seen, key)
	s.local.mu.Unlock()
	if err := s.kv.Delete(ctx, key); err != nil {
		return fmt.Errorf("nonces: %w", err)
	}
	return nil
}

// Key is the bucket key of a value: a digest, so any value makes a valid
// key and the bucket holds nothing readable.
func Key(value string) string {
	sum := sha256.Sum256([]byte(value))
	return hex.EncodeToString(sum[:20])
}

// local is a bounded memory of keys and when they may be forgotten.
type local struct {
	mu    sync.Mutex
	max   int
	seen  map[string]int64 // key -> forget after (unix nanos)
	swept int64            // last sweep (unix nanos)
}

func (l *local) has(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	until, ok := l.seen[key]
	return ok && now.UnixNano() < until
}

func (l *local) add(key string, now time.Time, ttl time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := now.UnixNano()
	if len(l.seen) >= l.max && n-l.swept >= int64(time.Second) {
		// Drop what has expired, at most once a second.
		l.swept = n
		for k, until := range l.seen {
			if n >= until {
				delete(l.seen, k)
			}
		}
	}
	if len(l.seen) >= l.max {
		return // the bucket alone remembers this one
	}
	l.seen[key] = n + int64(ttl)
}

// Len is the number of values remembered locally.
func (s *Store) Len() int {
	s.local.mu.Lock()
	defer s.local.mu.Unlock()
	return len(s.local.seen)
}
