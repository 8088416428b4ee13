package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/flashgate/flashgate/eventlog"
	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/stream"
	"github.com/nats-io/nats.go/jetstream"
)

const eventsUsage = `flashgate events — follow or write out the event history

Usage:
  flashgate events tail   [flags]   print events as they are stored, until Ctrl-C
  flashgate events export [flags]   write the history up to now, then stop

One line per event: request and decision batches are opened up, and each
event comes with its stream sequence (seq), its index inside its message
(idx), its subject, and for a decision the version of its batch and the
writer that committed it. A message that does not decode is reported on
stderr and written as a line of type "undecodable"; it never stops the tool.

Selecting:
  --sale S         only sale S (filtered on the server: fg.*.S)
  --type T         only events of type T: repeat it or separate with commas.
                   SaleCreated, TokenRequested, TokenIssued, TokenDenied,
                   TokenExpired, PurchaseRequested, PurchaseAccepted,
                   PurchaseRefused, undecodable. A message that does not
                   decode is shown whatever the types.

Where to start (at most one; tail: new events with --nats-url, everything stored with --data; export: the beginning):
  --from-seq N     at stream sequence N
  --since T        at the first message stored at or after T: RFC 3339
                   (2026-05-01T12:00:00Z), a date (2026-05-01, UTC), or a
                   duration meaning that long ago (15m, 2h)
  --last N         with the last N selected events

Where export stops: at the last message stored when it started, or
  --to-seq N       after stream sequence N

Output:
  --format F       text (tail's default), jsonl (export's default) or csv.
                   jsonl: the event's wire form with "seq", "idx", "subject",
                   "stored", "batch", "writer" added. csv: a header row, then
                   seq,idx,time,sale,type,id,shopper,request,token_id,
                   order_id,reason,already_issued,expires_at,
                   client_request_id,batch,writer,subject,stored,units,data,
                   error.
  --out FILE       export: write FILE (mode 0600) through a temporary file
                   renamed into place, instead of stdout ("-"); a summary
                   goes to stderr either way

Reaching the installation:
  --data DIR       the data directory of a STOPPED installation (default
                   data): the embedded NATS server is started on it. tail
                   then prints what is stored from its start and keeps
                   waiting: nothing new arrives while the installation is
                   stopped.
  --nats-url URL   a running installation: its NATS server or cluster. An
                   installation on the embedded server is reachable only
                   when it serves with --nats-listen ADDR; use the nats://
                   URL (credentials included) it reports.
  --nats-creds F   NATS credentials file for --nats-url

Every flag is also an environment variable: --nats-url is FLASHGATE_NATS_URL.

Examples:
  flashgate events tail --nats-url "$URL" --sale demo --type TokenIssued,TokenDenied
  flashgate events export --data data --sale demo --format csv --out demo.csv
`

// eventsCmd runs `flashgate events tail|export`.
func eventsCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, eventsUsage)
		return errUsage
	}
	switch args[0] {
	case "tail", "export":
		return eventsRun(ctx, args[0], args[1:], getenv, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, eventsUsage)
		return nil
	}
	fmt.Fprintf(stderr, "flashgate events: unknown subcommand %q\n\n%s", args[0], eventsUsage)
	return errUsage
}

// listFlag is a flag that may be given more than once.
type listFlag struct {
	vals []string
	sets int
}

func (l *listFlag) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(l.vals, ",")
}

func (l *listFlag) Set(v string) error {
	l.sets++
	l.vals = append(l.vals, v)
	return nil
}

func eventsRun(ctx context.Context, sub string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	export := sub == "export"
	fs := newFlags("events "+sub, stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, eventsUsage)
	}
	data := fs.String("data", "data", "data directory of a stopped installation (embedded NATS)")
	natsURL := fs.String("nats-url", "", "reach a running installation through its NATS server instead")
	creds := fs.String("nats-creds", "", "NATS credentials file for --nats-url")
	sale := fs.String("sale", "", "only this sale")
	var types listFlag
	fs.Var(&types, "type", "only events of this type (repeatable, or comma-separated)")
	fromSeq := fs.Uint64("from-seq", 0, "start at this stream sequence")
	since := fs.String("since", "", "start at the first message stored at or after this time (RFC 3339, date, or duration ago)")
	last := fs.Int("last", 0, "start with the last N selected events")
	defFormat := "text"
	if export {
		defFormat = "jsonl"
	}
	format := fs.String("format", defFormat, "output format: text, jsonl or csv")
	var out *string
	var toSeq *uint64
	if export {
		out = fs.String("out", "", "write this file (atomically) instead of stdout (-)")
		toSeq = fs.Uint64("to-seq", 0, "stop after this stream sequence")
	}
	if err := parse(fs, args, getenv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "flashgate events %s: unexpected argument %q\n", sub, fs.Arg(0))
		return errUsage
	}
	// The command line wins over FLASHGATE_TYPE: drop the variable's value
	// (parse sets it first, in one Set) when --type was given too.
	if getenv(envName("type")) != "" && types.sets > 1 {
		types.vals = types.vals[1:]
	}

	o := eventlog.Options{Sale: *sale, FromSeq: *fromSeq, Last: *last, Follow: !export}
	var err error
	if o.Types, err = eventlog.ParseTypes(types.vals); err != nil {
		return err
	}
	if *since != "" {
		if o.Since, err = parseSince(*since, time.Now()); err != nil {
			return err
		}
	}
	if *last < 0 {
		return fmt.Errorf("--last %d: must be positive", *last)
	}
	starts := 0
	for _, set := range []bool{*fromSeq > 0, *since != "", *last > 0} {
		if set {
			starts++
		}
	}
	if starts > 1 {
		return errors.New("choose one of --from-seq, --since and --last")
	}
	// tail starts at new events; on a stopped installation's data directory
	// nothing new can arrive, so it shows what is stored, then waits.
	if !export && starts == 0 && *natsURL != "" {
		o.New = true
	}
	if export {
		o.ToSeq = *toSeq
	}
	if *sale != "" && !events.ValidSaleID(*sale) {
		return fmt.Errorf("--sale %q: not a sale id (lower-case letters, digits, '-' and '_')", *sale)
	}
	// Check the format before reaching the installation.
	if _, err := eventlog.NewWriter(*format, io.Discard); err != nil {
		return err
	}

	// export's destination, made before reaching the installation so that a
	// bad --out fails at once.
	dest, where := io.Writer(stdout), "stdout"
	var file *atomicFile
	if export && *out != "" && *out != "-" {
		if file, err = createAtomic(*out); err != nil {
			return err
		}
		defer file.Abort()
		dest, where = file, *out
	}

	js, closeFn, err := openJetStream(*data, *natsURL, *creds, "flashgate-events")
	if err != nil {
		return err
	}
	defer closeFn()
	st, err := js.Stream(ctx, events.StreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("no stream %s: not a flashgate installation, or nothing was ever served", events.StreamName)
	}
	if err != nil {
		return fmt.Errorf("open stream %s: %w", events.StreamName, err)
	}
	r, err := eventlog.NewReader(st, o)
	if err != nil {
		return err
	}
	if *sale != "" {
		if _, _, err := stream.Sale(ctx, st, *sale); errors.Is(err, stream.ErrSaleNotFound) {
			fmt.Fprintf(stderr, "flashgate events: sale %s does not exist (yet)\n", *sale)
		}
	}

	if !export {
		w, _ := eventlog.NewWriter(*format, stdout)
		err := r.Read(ctx, reportUndecodable{w, stderr})
		if ctx.Err() != nil {
			return nil // Ctrl-C: the normal end of a tail
		}
		return err
	}

	w, _ := eventlog.NewWriter(*format, dest)
	if err := r.Read(ctx, reportUndecodable{w, stderr}); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("export interrupted: %w", ctx.Err())
		}
		return err
	}
	if file != nil {
		if err := file.Commit(); err != nil {
			return err
		}
	}
	s := r.Stats()
	fmt.Fprintf(stderr, "exported %s (%d undecodable) from %s of %s", plural(s.Events, "event"), s.Undecodable,
		plural(s.Messages, "message"), plural(s.Sales, "sale"))
	if s.Events > 0 {
		fmt.Fprintf(stderr, ", sequences %d..%d", s.FirstSeq, s.LastSeq)
	}
	fmt.Fprintf(stderr, ", to %s\n", where)
	return nil
}

// plural is "1 event", "2 events".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// reportUndecodable tells stderr about every message that does not decode,
// and passes every record on.
type reportUndecodable struct {
	eventlog.Writer
	stderr io.Writer
}

func (u reportUndecodable) Write(r eventlog.Record) error {
	if r.Err != nil {
		fmt.Fprintf(u.stderr, "flashgate events: message %d on %s does not decode: %v\n", r.Seq, r.Subject, r.Err)
	}
	return u.Writer.Write(r)
}

// parseSince reads --since: RFC 3339, a date (midnight UTC), or a duration
// meaning that long before now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--since %s: a duration ago must not be negative", s)
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want RFC 3339 (2026-05-01T12:00:00Z), a date (2026-05-01) or a duration (15m)", s)
}

// atomicFile is a file written under a temporary name next to its path and
// renamed into place by Commit, so that readers see the whole file or none.
type atomicFile struct {
	*os.File
	path string
	done bool
}

func createAtomic(path string) (*atomicFile, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("--out %s: %w", path, err)
	}
	return &atomicFile{File: f, path: path}, nil
}

// Commit syncs the file and renames it into place.
func (a *atomicFile) Commit() error {
	if err := a.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", a.path, err)
	}
	if err := a.Close(); err != nil {
		return fmt.Errorf("write %s: %w", a.path, err)
	}
	if err := os.Rename(a.Name(), a.path); err != nil {
		return fmt.Errorf("write %s: %w", a.path, err)
	}
	a.done = true
	return nil
}

// Abort removes the temporary file unless Commit succeeded.
func (a *atomicFile) Abort() {
	if a.done {
		return
	}
	a.Close()
	os.Remove(a.Name())
}

var _ flag.Value = (*listFlag)(nil)
