// Package kvpolicy keeps rate-limit policies in the FLASHGATE_LIMITS bucket,
// so operators change limits on every process at once and without a
// restart. A key is a policy name and its value the policy as JSON; a
// policy in the bucket replaces the built-in policy of the same name, and
// deleting it brings the built-in one back.
package kvpolicy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/flashgate/flashgate/ratelimit"
	"github.com/nats-io/nats.go/jetstream"
)

// Put validates p and stores it for every process.
func Put(ctx context.Context, kv jetstream.KeyValue, p ratelimit.Policy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, p.Name, b); err != nil {
		return fmt.Errorf("store policy %s: %w", p.Name, err)
	}
	return nil
}

// ErrNotSet is returned by Delete for a policy with no stored setting.
var ErrNotSet = errors.New("policy has no stored setting")

// Delete removes the stored setting of a policy: a built-in policy of that
// name applies again; any other is gone.
func Delete(ctx context.Context, kv jetstream.KeyValue, name string) error {
	if _, err := kv.Get(ctx, name); errors.Is(err, jetstream.ErrKeyNotFound) {
		return ErrNotSet
	} else if err != nil {
		return fmt.Errorf("policy %s: %w", name, err)
	}
	if err := kv.Delete(ctx, name); err != nil {
		return fmt.Errorf("delete policy %s: %w", name, err)
	}
	return nil
}

// Stored reads the policies stored in the bucket, by name. Entries that do
// not decode or validate are skipped and reported in bad.
func Stored(ctx context.Context, kv jetstream.KeyValue) (ps map[string]ratelimit.Policy, bad map[string]error, err error) {
	ps, bad = map[string]ratelimit.Policy{}, map[string]error{}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("list policies: %w", err)
	}
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("policy %s: %w", k, err)
		}
		p, err := decode(k, e.Value())
		if err != nil {
			bad[k] = err
			continue
		}
		ps[k] = p
	}
	return ps, bad, nil
}

func decode(key string, b []byte) (ratelimit.Policy, error) {
	var p ratelimit.Policy
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("policy %s: %w", key, err)
	}
	if p.Name != key {
		return p, fmt.Errorf("policy under key %s is named %q", key, p.Name)
	}
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("policy %s: %w", key, err)
	}
	return p, nil
}

// Effective is the policy set in force: the built-in policies with the
// stored ones laid over them by name, sorted by name.
func Effective(stored map[string]ratelimit.Policy) []ratelimit.Policy {
	byName := map[string]ratelimit.Policy{}
	for _, p := range ratelimit.Defaults() {
		byName[p.Name] = p
	}
	for n, p := range stored {
		byName[n] = p
	}
	out := make([]ratelimit.Policy, 0, len(byName))
	for _, p := range byName {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Watch hands the effective policies to set (typically a Limiter's
// SetPolicies) once the bucket is read and again on every change, until ctx
// ends. When the watch fails, the last policies stay in force; onDegraded
// reports the change of state both ways, and the watch starts again with
// backoff. resync, if set, returns a channel closed at the next reconnect
// to NATS: the watch then starts again at once (a server restart loses the
// watch's consumer, and the client would notice only after missed
// heartbeats), degraded until the bucket is read again.
func Watch(ctx context.Context, kv jetstream.KeyValue, set func([]ratelimit.Policy), log *slog.Logger, onDegraded func(bool), resync func() <-chan struct{}) {
	if log == nil {
		log = slog.Default()
	}
	degraded := false
	setDegraded := func(d bool, err error) {
		if d == degraded {
			return
		}
		degraded = d
		if d {
			log.Warn("rate limits: policy watch lost; the last known policies stay in force", "err", err)
		} else {
			log.Info("rate limits: policy watch restored")
		}
		if onDegraded != nil {
			onDegraded(d)
		}
	}
	for backoff := 250 * time.Millisecond; ctx.Err() == nil; backoff = min(2*backoff, 5*time.Second) {
		var again <-chan struct{}
		if resync != nil {
			again = resync()
		}
		err := watchOnce(ctx, kv, set, log, func() { backoff = 250 * time.Millisecond; setDegraded(false, nil) }, again)
		if errors.Is(err, errResync) {
			setDegraded(true, err)
			backoff = 250 * time.Millisecond
			continue
		}
		if ctx.Err() != nil {
			return
		}
		setDegraded(true, err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

var errResync = errors.New("reconnected to NATS: reading the policies again")

// watchOnce runs one watch until it fails, again is closed or ctx ends;
// live is called once the initial values are in.
func watchOnce(ctx context.Context, kv jetstream.KeyValue, set func([]ratelimit.Policy), log *slog.Logger, live func(), again <-chan struct{}) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer w.Stop()
	stored := map[string]ratelimit.Policy{}
	initial := true
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		select {
		case e, ok = <-w.Updates():
		case <-again:
			return errResync
		}
		if !ok {
			break
		}
		if e == nil {
			initial = false
			set(Effective(stored))
			live()
			continue
		}
		switch e.Operation() {
		case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
			delete(stored, e.Key())
		default:
			p, err := decode(e.Key(), e.Value())
			if err != nil {
				log.Error("rate limits: stored policy ignored", "key", e.Key(), "err", err)
				continue
			}
			stored[e.Key()] = p
		}
		if !initial {
			set(Effective(stored))
			log.Info("rate limits: policies changed", "key", e.Key(), "op", e.Operation().String())
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("policy watch ended")
}
