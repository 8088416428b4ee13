package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/flashgate/flashgate/audit"
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
	js, closeFn, err := openJetStream(data, natsURL, creds, "flashgate-audit")
	if err != nil {
		return nil, err
	}
	defer closeFn()
	return audit.Run(ctx, js, dbPath)
}
