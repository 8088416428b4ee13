package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/flashgate/flashgate/app"
	"github.com/flashgate/flashgate/audit"
	"github.com/flashgate/flashgate/embed"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// audit exits 0 when every invariant held, 1 on a violation or an error.
func auditCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := newFlags("audit", stderr)
	data := fs.String("data", "data", "data directory of a stopped installation (embedded NATS)")
	natsURL := fs.String("nats-url", "", "audit a running installation through its NATS server instead")
	creds := fs.String("nats-creds", "", "NATS credentials file for --nats-url")
	dbPath := fs.String("db", "", "write the replayed SQLite views to this file (default: a temporary file, removed)")
	if err := parse(fs, args, getenv); err != nil {
		return 2
	}
	rep, err := runAudit(ctx, *data, *natsURL, *creds, *dbPath)
	if err != nil {
		fmt.Fprintf(stderr, "flashgate audit: %v\n", err)
		return 1
	}
	rep.Write(stdout)
	if !rep.OK() {
		return 1
	}
	return 0
}

func runAudit(ctx context.Context, data, natsURL, creds, dbPath string) (*audit.Report, error) {
	if dbPath == "" {
		dir, err := os.MkdirTemp("", "flashgate-audit-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		dbPath = filepath.Join(dir, "audit.db")
	} else if _, err := os.Stat(dbPath); err == nil {
		return nil, fmt.Errorf("--db %s exists: the audit replays into a fresh file", dbPath)
	}
	var nc *nats.Conn
	if natsURL != "" {
		opts := []nats.Option{nats.Name("flashgate-audit")}
		if creds != "" {
			opts = append(opts, nats.UserCredentials(creds))
		}
		var err error
		if nc, err = nats.Connect(natsURL, opts...); err != nil {
			return nil, fmt.Errorf("connect to %s: %w", natsURL, err)
		}
	} else {
		dir := app.DataDir(data)
		if _, err := os.Stat(dir.NATS()); err != nil {
			return nil, fmt.Errorf("no flashgate installation in %s (%v)", app.Abs(data), err)
		}
		unlock, err := dir.Lock()
		if errors.Is(err, app.ErrLocked) {
			return nil, fmt.Errorf("%w: stop it first, or audit it with --nats-url", err)
		}
		if err != nil {
			return nil, err
		}
		defer unlock()
		ns, err := embed.Start(embed.Options{Dir: dir.NATS()})
		if err != nil {
			return nil, err
		}
		defer ns.Shutdown()
		if nc, err = ns.Connect(); err != nil {
			return nil, err
		}
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	return audit.Run(ctx, js, dbPath)
}
