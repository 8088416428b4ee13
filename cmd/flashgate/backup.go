package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/flashgate/flashgate/internal/natsurl"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/flashgate/flashgate/app"
	"github.com/flashgate/flashgate/backup"
	"github.com/flashgate/flashgate/embed"
	"github.com/nats-io/nats.go"
)

const backupUsage = `Usage:
  flashgate backup --out FILE [--data DIR]
  flashgate backup --out FILE --nats-url URL [--nats-creds F] (--data DIR | --no-keys)

Backs up a whole installation into one archive: the event stream as a
JetStream snapshot (every message keeps its sequence), the lease bucket's
configuration (leases are recreated empty), and from the data directory the
signing keys, admin token, node id and NATS listener password. Without
--nats-url the installation must be stopped: its data directory is served by
the embedded NATS server. With --nats-url it may be running; --data then
names the data directory of one of its processes, for the keys. FILE is
replaced atomically, mode 0600; "-" writes to standard output.

Flags:
`

const restoreUsage = `Usage:
  flashgate restore --in FILE --data DIR
  flashgate restore --in FILE --nats-url URL [--nats-creds F] (--data DIR | --no-keys)
  flashgate restore --in FILE --check

Restores a backup into a fresh installation: DIR must not exist or be empty,
the NATS target must not have flashgate's streams. Without --nats-url the
streams go into DIR's embedded store. Every stream keeps its sequences; the
keys, admin token and node id are written into DIR (mode 0600), so tokens
and sessions issued before stay valid. --check only reads the backup and
verifies it. "-" reads standard input.

Flags:
`

func backupCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlags("backup", stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), backupUsage); fs.PrintDefaults() }
	out := fs.String("out", "", "the backup file to write (- for standard output)")
	data := fs.String("data", "data", "data directory: of the stopped installation, or with --nats-url of one of its processes (for the keys)")
	natsURL := fs.String("nats-url", "", "back up a running installation through its NATS server")
	creds := fs.String("nats-creds", "", "NATS credentials file for --nats-url")
	noKeys := fs.Bool("no-keys", false, "leave out the signing keys, admin token and node id")
	tokenKeys := fs.String("token-key-file", "", "purchase-token keys, when serve takes them from this file and not the data directory")
	sessionKeys := fs.String("session-key-file", "", "session keys, when serve takes them from this file and not the data directory")
	if err := parse(fs, args, getenv); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return backupUsageError(fs, "unexpected arguments %q", fs.Args())
	case *out == "":
		return backupUsageError(fs, "--out FILE is required")
	case *natsURL != "" && !*noKeys && !backupFlagSet(fs, "data"):
		return backupUsageError(fs, "with --nats-url, name the data directory of one of the installation's processes with --data (for its keys), or pass --no-keys")
	}
	start := time.Now()
	js, closeFn, err := openJetStream(*data, *natsURL, *creds, "flashgate-backup")
	if err != nil {
		return err
	}
	defer closeFn()
	var files []backup.File
	if !*noKeys {
		files, err = backup.ReadDataFiles(*data, *tokenKeys, *sessionKeys)
		if errors.Is(err, backup.ErrNoKeys) {
			return fmt.Errorf("%w: name the data directory with --data or the key file with --token-key-file, or pass --no-keys", err)
		}
		if err != nil {
			return err
		}
	}
	source := "data directory " + app.Abs(*data) + " (embedded NATS)"
	if *natsURL != "" {
		source = backupRedactURL(*natsURL)
	}

	opts := backup.Options{Files: files, Source: source, Program: "flashgate " + version}
	var m *backup.Manifest
	var size int64
	report := stdout
	if *out == "-" {
		report = stderr // standard output carries the backup
		cw := &backupCounter{w: stdout}
		m, err = backup.Write(ctx, js.Conn(), cw, opts)
		size = cw.n
	} else {
		opts.TempDir = filepath.Dir(*out)
		size, err = backupWriteAtomic(*out, func(w io.Writer) error {
			var err error
			m, err = backup.Write(ctx, js.Conn(), w, opts)
			return err
		})
	}
	if err != nil {
		return err
	}
	target := "standard output"
	if *out != "-" {
		target = app.Abs(*out)
	}
	fmt.Fprintf(report, "backed up %s\n  to %s: %s in %v\n", source, target, backupSize(size), time.Since(start).Round(time.Millisecond))
	backupPrintManifest(report, m)
	if *noKeys {
		fmt.Fprintln(report, "  no keys (--no-keys): a restore needs the key files from elsewhere, or tokens and sessions issued before stop verifying")
	}
	return nil
}

func restoreCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlags("restore", stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), restoreUsage); fs.PrintDefaults() }
	in := fs.String("in", "", "the backup file (- for standard input)")
	data := fs.String("data", "data", "data directory to restore into: must not exist or be empty")
	natsURL := fs.String("nats-url", "", "restore the streams into this NATS server or cluster instead of the embedded store")
	creds := fs.String("nats-creds", "", "NATS credentials file for --nats-url")
	noKeys := fs.Bool("no-keys", false, "do not write the keys, admin token and node id (with --nats-url: write no data directory)")
	replicas := fs.Int("replicas", 0, "replicas of the restored streams (default: as backed up; 3 on a cluster)")
	check := fs.Bool("check", false, "only read the backup and verify it; restore nothing")
	if err := parse(fs, args, getenv); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return backupUsageError(fs, "unexpected arguments %q", fs.Args())
	case *in == "":
		return backupUsageError(fs, "--in FILE is required")
	case *natsURL != "" && !*noKeys && !backupFlagSet(fs, "data"):
		return backupUsageError(fs, "with --nats-url, name the data directory to write the keys into with --data, or pass --no-keys")
	}
	start := time.Now()
	var r io.Reader = os.Stdin
	source := "standard input"
	if *in != "-" {
		f, err := os.Open(*in)
		if err != nil {
			return err
		}
		defer f.Close()
		r, source = f, app.Abs(*in)
	}
	if *check {
		res, err := backup.Verify(r)
		if err != nil {
			return fmt.Errorf("%s: %w", source, err)
		}
		fmt.Fprintf(stdout, "%s is intact (checked in %v)\n", source, time.Since(start).Round(time.Millisecond))
		backupPrintManifest(stdout, res.Manifest)
		return nil
	}

	// Everything is restored into a staging directory next to DIR and
	// renamed into place at the end: DIR appears whole or not at all.
	writeDir := *natsURL == "" || !*noKeys
	var stage string
	if writeDir {
		if err := restoreCheckFresh(*data); err != nil {
			return err
		}
		abs, err := filepath.Abs(*data)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
			return err
		}
		if stage, err = os.MkdirTemp(filepath.Dir(abs), "."+filepath.Base(abs)+".restore-*"); err != nil {
			return err
		}
		defer os.RemoveAll(stage) // nothing left after the rename
	}
	nc, closeNATS, err := restoreTarget(stage, *natsURL, *creds)
	if err != nil {
		return err
	}
	defer closeNATS()
	res, err := backup.Restore(ctx, nc, r, backup.RestoreOptions{
		Replicas: *replicas,
		Check: func(m *backup.Manifest) error {
			if !*noKeys && !m.HasKeys() {
				return errors.New("the backup holds no signing keys (it was made with --no-keys): restore with --no-keys and give serve the key files (--token-key-file, --session-key-file)")
			}
			return nil
		},
	})
	if err != nil {
		return fmt.Errorf("%s: %w", source, err)
	}
	if !*noKeys {
		if err := backup.WriteDataFiles(stage, res.Files); err != nil {
			return err
		}
	}
	closeNATS()
	if writeDir {
		// An empty DIR makes way (os.Remove refuses one that filled up
		// meanwhile); the rename is atomic.
		dir := app.Abs(*data)
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("restore into %s: %w", dir, err)
		}
		if err := os.Rename(stage, dir); err != nil {
			return fmt.Errorf("restore into %s: %w", dir, err)
		}
		if err := backup.SyncDir(filepath.Dir(dir)); err != nil {
			return err
		}
	}

	m := res.Manifest
	target := "data directory " + app.Abs(*data) + " (embedded NATS)"
	if *natsURL != "" {
		target = backupRedactURL(*natsURL)
	}
	fmt.Fprintf(stdout, "restored %s\n  backup of %s, made %s\n  into %s in %v\n", source, m.Source, m.Created.Format(time.RFC3339), target, time.Since(start).Round(time.Millisecond))
	for _, s := range res.Streams {
		switch s.Contents {
		case backup.ContentsSnapshot:
			fmt.Fprintf(stdout, "  stream %s: %d messages, sequences %d-%d, as backed up (%s of snapshot in %v)\n",
				s.Name, s.State.Msgs, s.State.FirstSeq, s.State.LastSeq, backupSize(s.Bytes), s.Took.Round(time.Millisecond))
		default:
			fmt.Fprintf(stdout, "  stream %s: created empty\n", s.Name)
		}
	}
	switch {
	case *noKeys:
		fmt.Fprintln(stdout, "  no keys written (--no-keys)")
	default:
		names := make([]string, len(res.Files))
		for i, f := range res.Files {
			names[i] = f.Name
		}
		fmt.Fprintf(stdout, "  files (mode 0600) in %s: %s\n", app.Abs(*data), strings.Join(names, ", "))
	}
	if *natsURL == "" {
		fmt.Fprintf(stdout, "check it: flashgate audit --data %s\n", *data)
	} else {
		fmt.Fprintf(stdout, "check it: flashgate audit --nats-url %s\n", backupRedactURL(*natsURL))
	}
	return nil
}

// restoreTarget connects to the NATS the restore writes into: an external
// server, or the embedded one on the staging data directory's store. The
// close function may be called more than once.
func restoreTarget(stage, natsURL, creds string) (*nats.Conn, func(), error) {
	if natsURL != "" {
		opts := []nats.Option{nats.Name("flashgate-restore")}
		if creds != "" {
			opts = append(opts, nats.UserCredentials(creds))
		}
		nc, err := nats.Connect(natsURL, opts...)
		if err != nil {
			return nil, nil, fmt.Errorf("connect to %s: %w", backupRedactURL(natsURL), err)
		}
		return nc, nc.Close, nil
	}
	ns, err := embed.Start(embed.Options{Dir: app.DataDir(stage).NATS()})
	if err != nil {
		return nil, nil, err
	}
	nc, err := ns.Connect(nats.Name("flashgate-restore"))
	if err != nil {
		ns.Shutdown()
		return nil, nil, err
	}
	return nc, func() { nc.Close(); ns.Shutdown() }, nil
}

// restoreCheckFresh accepts a data directory that does not exist or is empty.
func restoreCheckFresh(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore into %s: %w", app.Abs(dir), err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("refusing to restore into %s: it is not empty (restore never writes over an installation; name a new directory)", app.Abs(dir))
	}
	return nil
}

// backupWriteAtomic writes path through a temporary file in its directory, synced
// and renamed over path (mode 0600), and returns the bytes written.
func backupWriteAtomic(path string, write func(io.Writer) error) (int64, error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*") // mode 0600
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	cw := &backupCounter{w: tmp}
	if err := write(cw); err != nil {
		tmp.Close()
		return 0, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return 0, err
	}
	if err := tmp.Close(); err != nil {
		return 0, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return 0, err
	}
	return cw.n, backup.SyncDir(dir)
}

func backupPrintManifest(w io.Writer, m *backup.Manifest) {
	for _, s := range m.Streams {
		switch s.Contents {
		case backup.ContentsSnapshot:
			fmt.Fprintf(w, "  stream %s: %d messages, sequences %d-%d, snapshot %s (%s)\n",
				s.Name, s.State.Msgs, s.State.FirstSeq, s.State.LastSeq, backupSize(s.Size), s.Format)
		default:
			fmt.Fprintf(w, "  stream %s: configuration only, restored empty\n", s.Name)
		}
	}
	if len(m.Files) > 0 {
		names := make([]string, len(m.Files))
		for i, f := range m.Files {
			names[i] = f.Name
		}
		fmt.Fprintf(w, "  files: %s\n", strings.Join(names, ", "))
	}
}

// backupFlagSet reports whether flag name was given, on the command line or as a
// FLASHGATE_* variable.
func backupFlagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func backupUsageError(fs *flag.FlagSet, format string, args ...any) error {
	fmt.Fprintf(fs.Output(), "%s: %s\n", fs.Name(), fmt.Sprintf(format, args...))
	return errUsage
}

// backupRedactURL drops user information from NATS URLs (a comma-separated
// list, entries with or without a scheme), for messages and the manifest.
func backupRedactURL(s string) string { return natsurl.Strip(s) }

func backupSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

type backupCounter struct {
	w io.Writer
	n int64
}

func (c *backupCounter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
