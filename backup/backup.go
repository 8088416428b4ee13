// Package backup writes and restores a whole flashgate installation as one
// archive: the event stream as JetStream's own snapshot (so every message
// keeps its stream sequence, which decision batches record as cursors), the
// lease bucket's configuration, and the installation's secrets and identity
// from its data directory (signing keys, admin token, node id).
//
// It speaks JetStream's snapshot and restore API ($JS.API.STREAM.SNAPSHOT.*
// and $JS.API.STREAM.RESTORE.*) with plain NATS requests, since the
// jetstream client package has none, so it works on a running installation
// as well as on a stopped one served by the embedded server.
//
// The archive is a tar file (gzip is accepted on restore):
//
//	manifest.json                    format, creation time, source, streams with
//	                                 their state, size and SHA-256, files
//	data/keys/purchase-tokens.json   files of the data directory, by their path in it
//	data/keys/sessions.json
//	data/admin-token
//	data/node-id
//	data/nats-password
//	streams/FLASHGATE.snapshot       the server's snapshot, as the server produced
//	                                 it (S2-compressed NATS archive)
//
// The lease bucket is recorded by its configuration only and recreated empty
// on restore: a lease names the process that writes a sale and lapses within
// seconds; by the time a backup is restored every lease in it has lapsed,
// and safety never rested on leases (a writer is fenced by the expected last
// sequence of its sale's decision subject, which the stream snapshot keeps).
package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/nats-io/nats.go"
)

// Format and FormatVersion identify a flashgate backup's manifest. A reader
// refuses a version it does not know.
const (
	Format        = "flashgate-backup"
	FormatVersion = 1
)

// Archive member names.
const (
	manifestMember = "manifest.json"
	dataPrefix     = "data/"
	streamsPrefix  = "streams/"
	snapshotSuffix = ".snapshot"
)

// Contents of a stream in the backup.
const (
	// ContentsSnapshot: the stream's messages, as the server's snapshot.
	ContentsSnapshot = "snapshot"
	// ContentsEmpty: the configuration only; restore creates it empty.
	ContentsEmpty = "empty"
)

// Snapshot formats, as detected when the backup was written.
const (
	SnapshotNATSArchive = "nats-archive-v2" // NATS server 2.14 and later: S2 + the server's archive format
	SnapshotNATSLegacy  = "nats-tar-s2"     // older servers: S2-compressed tar of the store files
)

// ErrCorrupt is returned for an archive that is not a complete, intact
// flashgate backup: truncated, altered, or something else entirely.
var ErrCorrupt = errors.New("not an intact flashgate backup")

// ErrExists is returned by Restore when the target already has one of the
// installation's streams: restore never writes over an installation.
var ErrExists = errors.New("target already has a flashgate installation")

// Manifest describes a backup; it is the archive's first member.
type Manifest struct {
	Format  string    `json:"format"`
	Version int       `json:"version"`
	Created time.Time `json:"created"`
	Program string    `json:"program,omitempty"` // the program that wrote it, e.g. "flashgate v1.2.0"
	Source  string    `json:"source"`            // where the installation was reached (no credentials)
	Server  string    `json:"server,omitempty"`  // the NATS server's name and version
	Streams []Stream  `json:"streams"`
	Files   []File    `json:"files"`
}

// Stream is one JetStream stream of the installation.
type Stream struct {
	Name     string `json:"name"`
	Contents string `json:"contents"` // ContentsSnapshot or ContentsEmpty
	// Bucket is the key-value bucket the stream backs, if any.
	Bucket string `json:"bucket,omitempty"`
	// Member is the archive member holding the snapshot; Size and SHA256
	// are its length and digest; Format is the snapshot's format.
	Member string `json:"member,omitempty"`
	Format string `json:"format,omitempty"`
	Size   int64  `json:"size,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	// State is the stream's state in the snapshot: a restore reproduces its
	// first and last sequence and message count exactly.
	State State `json:"state"`
	// Config is the stream's configuration as the server reported it.
	Config json.RawMessage `json:"config"`
}

// State is a stream's state, as JetStream reports it.
type State struct {
	Msgs       uint64    `json:"messages"`
	Bytes      uint64    `json:"bytes"`
	FirstSeq   uint64    `json:"first_seq"`
	FirstTime  time.Time `json:"first_ts"`
	LastSeq    uint64    `json:"last_seq"`
	LastTime   time.Time `json:"last_ts"`
	NumDeleted int       `json:"num_deleted,omitempty"`
	Consumers  int       `json:"consumer_count"`
}

// File is a file of the data directory. In a Manifest it carries Name, Size
// and SHA256; Data is filled when it is read from or written to disk.
type File struct {
	Name   string `json:"name"` // slash-separated path inside the data directory, e.g. "keys/sessions.json"
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Data   []byte `json:"-"`
}

// Options configures Write.
type Options struct {
	// Files are the data directory's files to include (see ReadDataFiles).
	Files []File
	// Source says where the installation was reached, for the manifest;
	// it must not hold credentials.
	Source string
	// Program names the writing program and its version.
	Program string
	// TempDir holds the snapshot while it is received (the archive's
	// manifest, which comes first, needs its size and digest). Empty: the
	// system's temporary directory.
	TempDir string
	// Now is the clock for the manifest's creation time. Nil: time.Now.
	Now func() time.Time
}

// What Write saves: the event stream with its messages, the lease bucket's
// stream by its configuration only.
const (
	snapshotStream = events.StreamName
	leaseStream    = "KV_" + events.LeaseBucket
)

// Write backs up the installation reachable through nc to w and returns the
// manifest it wrote. The installation may be running: the snapshot is the
// stream up to the sequence it had when the snapshot began.
func Write(ctx context.Context, nc *nats.Conn, w io.Writer, opts Options) (*Manifest, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m := &Manifest{
		Format:  Format,
		Version: FormatVersion,
		Created: opts.Now().UTC(),
		Program: opts.Program,
		Source:  opts.Source,
		Server:  serverOf(nc),
		Files:   []File{},
	}
	for _, f := range opts.Files {
		if err := checkFileName(f.Name); err != nil {
			return nil, err
		}
		sum := sha256.Sum256(f.Data)
		m.Files = append(m.Files, File{Name: f.Name, Size: int64(len(f.Data)), SHA256: hex.EncodeToString(sum[:]), Data: f.Data})
	}

	// The snapshot goes to a spool file first: the manifest precedes it in
	// the archive and records its size and digest.
	spool, err := os.CreateTemp(opts.TempDir, ".flashgate-backup-*.snapshot") // mode 0600
	if err != nil {
		return nil, fmt.Errorf("backup: spool file: %w", err)
	}
	defer func() {
		spool.Close()
		os.Remove(spool.Name())
	}()
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(spool, h)}
	snap, err := snapshot(ctx, nc, snapshotStream, cw)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	st := Stream{
		Name:     snapshotStream,
		Contents: ContentsSnapshot,
		Member:   streamsPrefix + snapshotStream + snapshotSuffix,
		Size:     cw.n,
		SHA256:   hex.EncodeToString(h.Sum(nil)),
		State:    *snap.State,
		Config:   snap.Config,
	}
	// Read the snapshot back: it must be complete (the server's end marker)
	// and hold as many messages as the server said.
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("backup: spool file: %w", err)
	}
	st.Format, err = checkSnapshot(spool, &st.State)
	if err != nil {
		return nil, fmt.Errorf("backup: snapshot of %s: %w", snapshotStream, err)
	}
	m.Streams = append(m.Streams, st)
	switch info, err := streamInfo(ctx, nc, leaseStream); {
	case errors.Is(err, errStreamNotFound):
		// Never served: the first serve creates it.
	case err != nil:
		return nil, fmt.Errorf("backup: %w", err)
	default:
		m.Streams = append(m.Streams, Stream{Name: leaseStream, Contents: ContentsEmpty, Bucket: bucketOf(leaseStream), Config: info.Config})
	}

	tw := tar.NewWriter(w)
	mj, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("backup: manifest: %w", err)
	}
	if err := writeMember(tw, manifestMember, m.Created, int64(len(mj)), bytes.NewReader(mj)); err != nil {
		return nil, err
	}
	for _, f := range m.Files {
		if err := writeMember(tw, dataPrefix+f.Name, m.Created, f.Size, bytes.NewReader(f.Data)); err != nil {
			return nil, err
		}
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("backup: spool file: %w", err)
	}
	if err := writeMember(tw, st.Member, m.Created, st.Size, spool); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("backup: write archive: %w", err)
	}
	return m, nil
}

func writeMember(tw *tar.Writer, name string, mod time.Time, size int64, r io.Reader) error {
	// Whole seconds and short names: plain USTAR headers, no PAX records.
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o600, ModTime: mod.Truncate(time.Second), Format: tar.FormatUSTAR}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("backup: write archive: %w", err)
	}
	n, err := io.Copy(tw, r)
	if err != nil {
		return fmt.Errorf("backup: write archive: %s: %w", name, err)
	}
	if n != size {
		return fmt.Errorf("backup: write archive: %s: wrote %d of %d bytes", name, n, size)
	}
	return nil
}

// serverOf names the server nc is connected to, for the manifest.
func serverOf(nc *nats.Conn) string {
	name, version := nc.ConnectedServerName(), nc.ConnectedServerVersion()
	if name == "" && version == "" {
		return ""
	}
	return fmt.Sprintf("%s (nats-server %s)", name, version)
}

// bucketOf is the key-value bucket a stream backs, or "".
func bucketOf(stream string) string {
	if b, ok := strings.CutPrefix(stream, "KV_"); ok {
		return b
	}
	return ""
}

// checkFileName accepts only the data directory's known files, so that a
// restore cannot be made to write anywhere else.
func checkFileName(name string) error {
	for _, df := range dataFiles {
		if df.name == name {
			return nil
		}
	}
	return fmt.Errorf("backup: %q is not a data directory file a backup carries", name)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
