package api

import (
	"testing"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/front"
	"github.com/flashgate/flashgate/queue"
)

// TestShown: what a shopper is told of a ticket: an admitted ticket hands
// its token over within the claim window only (past claimBy it is expired,
// unclaimed, even before the writer's word for it is folded); a claimed
// one while its token is valid and unused.
func TestShown(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	admitted := front.QueueView{Status: queue.Admitted, TokenExpiresAt: now.Add(5 * time.Minute), ClaimBy: now.Add(time.Minute)}
	for _, c := range []struct {
		name           string
		q              front.QueueView
		at             time.Time
		status, reason string
		token          bool
	}{
		{"admitted", admitted, now, queue.Admitted, "", true},
		{"admitted, past claimBy", admitted, now.Add(time.Minute), queue.Expired, events.LeftUnclaimed, false},
		{"admitted, token expired", admitted, now.Add(5 * time.Minute), queue.Expired, events.LeftUnclaimed, false},
		{"claimed, token valid", front.QueueView{Status: queue.Claimed, TokenExpiresAt: now.Add(time.Minute), ClaimBy: now.Add(-time.Minute)},
			now, queue.Admitted, "", true},
		{"claimed, bought", front.QueueView{Status: queue.Claimed, Bought: true, TokenExpiresAt: now.Add(time.Minute)}, now, queue.Claimed, reasonBought, false},
		{"claimed, token expired", front.QueueView{Status: queue.Claimed, TokenExpiresAt: now}, now, queue.Claimed, reasonTokenExpired, false},
		{"waiting", front.QueueView{Status: queue.Waiting}, now, queue.Waiting, "", false},
	} {
		status, reason, token := shown(c.q, c.at)
		if status != c.status || reason != c.reason || token != c.token {
			t.Errorf("%s: %s %q %v, want %s %q %v", c.name, status, reason, token, c.status, c.reason, c.token)
		}
	}
}

// TestRecentID: a ticket id is waited for when it is a ULID stamped within
// recentTicket of now.
func TestRecentID(t *testing.T) {
	now := time.Now()
	ids := events.NewIDs()
	for _, c := range []struct {
		id   string
		want bool
	}{
		{ids.New(now), true},
		{ids.New(now.Add(-20 * time.Second)), true},
		{ids.New(now.Add(2 * time.Second)), true}, // another process's clock runs a little ahead
		{ids.New(now.Add(-time.Minute)), false},
		{"nope", false},
	} {
		if got := recentID(c.id, now); got != c.want {
			t.Errorf("recentID(%s) = %v, want %v", c.id, got, c.want)
		}
	}
}
