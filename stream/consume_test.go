package stream_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/internal/fgtest"
	"github.com/flashgate/flashgate/stream"
	"github.com/nats-io/nats.go/jetstream"
)

// TestLogConsumeErrors: a consumer that meets trouble (here: deleted on
// the server under it, which the ordered consumer mends by itself) says
// so in the log, named, instead of only going quiet.
func TestLogConsumeErrors(t *testing.T) {
	e := fgtest.New(t)
	var out fgtest.Buffer
	cons, err := e.Stream.OrderedConsumer(context.Background(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.RequestSubject("s")},
	})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(jetstream.Msg) {}, jetstream.PullHeartbeat(500*time.Millisecond),
		stream.LogConsumeErrors(out.Logger(), "test requests", "sale", "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	if err := e.Stream.DeleteConsumer(context.Background(), cons.CachedInfo().Name); err != nil {
		t.Fatal(err)
	}
	fgtest.WaitFor(t, 10*time.Second, func() error {
		if s := out.String(); !strings.Contains(s, "level=WARN") || !strings.Contains(s, "consumer=\"test requests\"") || !strings.Contains(s, "sale=s") {
			return fmt.Errorf("log so far: %q", s)
		}
		return nil
	})
}
