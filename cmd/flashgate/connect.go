package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/flashgate/flashgate/app"
	"github.com/flashgate/flashgate/embed"
	"github.com/flashgate/flashgate/internal/natsurl"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// openJetStream reaches an installation's JetStream: through natsURL (a
// running installation, embedded with --nats-listen or on a cluster) or, when
// natsURL is empty, by starting the embedded server on the data directory of
// a stopped installation (refused while it runs). Call closeFn when done.
func openJetStream(data, natsURL, creds, name string) (js jetstream.JetStream, closeFn func(), err error) {
	if natsURL != "" {
		opts := []nats.Option{nats.Name(name)}
		if creds != "" {
			opts = append(opts, nats.UserCredentials(creds))
		}
		nc, err := nats.Connect(natsURL, opts...)
		if err != nil {
			return nil, nil, fmt.Errorf("connect to %s: %w", natsurl.Redact(natsURL), err)
		}
		js, err := jetstream.New(nc)
		if err != nil {
			nc.Close()
			return nil, nil, err
		}
		return js, nc.Close, nil
	}
	dir := app.DataDir(data)
	if _, err := os.Stat(dir.NATS()); err != nil {
		return nil, nil, fmt.Errorf("no flashgate installation in %s (%v)", app.Abs(data), err)
	}
	unlock, err := dir.Lock()
	if errors.Is(err, app.ErrLocked) {
		return nil, nil, fmt.Errorf("%w: stop it first, or reach it with --nats-url", err)
	}
	if err != nil {
		return nil, nil, err
	}
	ns, err := embed.Start(embed.Options{Dir: dir.NATS()})
	if err != nil {
		unlock()
		return nil, nil, err
	}
	nc, err := ns.Connect(nats.Name(name))
	if err != nil {
		ns.Shutdown()
		unlock()
		return nil, nil, err
	}
	js, err = jetstream.New(nc)
	if err != nil {
		nc.Close()
		ns.Shutdown()
		unlock()
		return nil, nil, err
	}
	return js, func() { nc.Close(); ns.Shutdown(); unlock() }, nil
}
