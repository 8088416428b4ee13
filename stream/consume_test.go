package stream_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/internal/fgtest"
	"github.com/flashgate/flashgate/stream"
	"github.com/nats-io/nats.go/jetstream"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestLogConsumeErrors: a consumer that meets trouble (here: deleted on
// the server under it, which the ordered consumer mends by itself) says
// so in the log, named, instead of only going quiet.
func TestLogConsumeErrors(t *testing.T) {
	e := fgtest.New(t)
	var out syncBuffer
	log := slog.New(slog.NewTextHandler(&out, nil))
	cons, err := e.Stream.OrderedConsumer(context.Background(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.RequestSubject("s")},
	})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(jetstream.Msg) {}, jetstream.PullHeartbeat(500*time.Millisecond),
		stream.LogConsumeErrors(log, "test requests", "sale", "s"))
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
