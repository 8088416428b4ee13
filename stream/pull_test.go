package stream_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/internal/fgtest"
	"github.com/flashgate/flashgate/stream"
	"github.com/nats-io/nats.go/jetstream"
)

// TestPullBufferDoesNotStall reads 60,000 messages of mixed sizes through
// ordered consumers whose pulls each end on their byte budget, hundreds of
// pulls, a few of which end with a message that fills the budget to the
// byte. With jetstream.PullMaxMessagesWithBytesLimit(64, 2000) in place of
// the option, the read stalls after 690 messages, every time; with (1024,
// 20000), the writer's proportions, after 8,608.
//
// It does not run with -short (the race detector's run): with a buffer
// this small, the race detector's slowness also brings out the client's
// own skipped-pull stall (see stream.PullBuffer), in about half the runs on
// a busy machine, which this test is not about and no option avoids.
func TestPullBufferDoesNotStall(t *testing.T) {
	if testing.Short() {
		t.Skip("reads 60,000 messages; the race detector's slowness brings out another stall (see the doc)")
	}
	e := fgtest.New(t)
	ctx := context.Background()
	subject := events.RequestSubject("s")
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 60000
	for range n {
		if _, err := e.JS.PublishAsync(subject, make([]byte, 1+rng.IntN(64))); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-e.JS.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("publishing did not complete")
	}

	for _, mode := range []string{"Consume", "Messages"} {
		t.Run(mode, func(t *testing.T) {
			cons, err := e.Stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
			if err != nil {
				t.Fatal(err)
			}
			// A message here is about 100 to 160 bytes with its subject and
			// ack reply, against a 20,000-byte buffer.
			opt := stream.PullBufferOf(20000, 1000)
			got := make(chan uint64, 64)
			if mode == "Consume" {
				cc, err := cons.Consume(func(m jetstream.Msg) {
					md, _ := m.Metadata()
					got <- md.Sequence.Stream
				}, opt, jetstream.PullHeartbeat(stream.ReadHeartbeat))
				if err != nil {
					t.Fatal(err)
				}
				defer cc.Stop()
			} else {
				it, err := cons.Messages(opt, jetstream.PullHeartbeat(stream.ReadHeartbeat))
				if err != nil {
					t.Fatal(err)
				}
				defer it.Stop()
				go func() {
					for {
						m, err := it.Next()
						if err != nil {
							return
						}
						md, _ := m.Metadata()
						got <- md.Sequence.Stream
					}
				}()
			}
			// A stalled consumer starts over after two missed heartbeats
			// (2 s) and then goes on: only a gap shows it.
			gap := stream.ReadHeartbeat / 2
			for i := range n {
				select {
				case seq := <-got:
					if seq != uint64(i+1) {
						t.Fatalf("message %d has sequence %d", i+1, seq)
					}
				case <-time.After(gap):
					t.Fatalf("no message for %v after %d of %d: the consumer stalled", gap, i, n)
				}
			}
		})
	}
}
