package backup

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// RestoreOptions configures Restore.
type RestoreOptions struct {
	// Replicas of the restored streams. Zero: as in the backup.
	Replicas int
	// Check, if set, sees the manifest before anything is restored; an
	// error stops the restore.
	Check func(*Manifest) error
}

// Result is what Restore did, or what Verify found.
type Result struct {
	Manifest *Manifest
	// Files are the data directory's files in the backup, with their data,
	// checked against the manifest. Restore does not write them: see
	// WriteDataFiles.
	Files   []File
	Streams []Restored
}

// Restored is one stream of a restore.
type Restored struct {
	Name     string
	Contents string // ContentsSnapshot or ContentsEmpty
	Bytes    int64  // snapshot bytes sent to the server
	State    State  // the stream's state after the restore, as the server reports it
	Took     time.Duration
}

// maxSmallMember bounds the manifest and the data directory's files.
const maxSmallMember = 1 << 20

// Restore restores the backup r yields into the JetStream reachable through
// nc, which must not have any of the backup's streams (ErrExists). Each
// snapshot is checked against the manifest's digest before the server is
// told its data is complete, so a damaged archive (ErrCorrupt) restores
// nothing; streams a failed restore created are deleted again. At the end
// every restored stream's first and last sequence and message count must
// equal the manifest's.
func Restore(ctx context.Context, nc *nats.Conn, r io.Reader, opts RestoreOptions) (res *Result, err error) {
	tr, m, err := openArchive(r)
	if err != nil {
		return nil, err
	}
	if opts.Check != nil {
		if err := opts.Check(m); err != nil {
			return nil, err
		}
	}
	for _, s := range m.Streams {
		_, err := streamInfo(ctx, nc, s.Name)
		if err == nil {
			return nil, fmt.Errorf("%w: stream %s exists", ErrExists, s.Name)
		}
		if !errors.Is(err, errStreamNotFound) {
			return nil, err
		}
	}
	configs := map[string]json.RawMessage{}
	for _, s := range m.Streams {
		cfg, err := withReplicas(s.Config, opts.Replicas)
		if err != nil {
			return nil, fmt.Errorf("restore: configuration of %s: %w", s.Name, err)
		}
		configs[s.Name] = cfg
	}

	var created []string
	defer func() {
		if err == nil {
			return
		}
		if rerr := removeStreams(ctx, nc, created); rerr != nil {
			err = fmt.Errorf("%w; and the streams it created could not be removed: %v", err, rerr)
		}
	}()
	res = &Result{Manifest: m}
	err = walk(tr, m,
		func(f File) error {
			res.Files = append(res.Files, f)
			return nil
		},
		func(s *Stream, data io.Reader) error {
			start := time.Now()
			n, st, started, err := restoreStream(ctx, nc, s.Name, configs[s.Name], s.State, data)
			if started {
				created = append(created, s.Name)
			}
			if err != nil {
				return err
			}
			res.Streams = append(res.Streams, Restored{Name: s.Name, Contents: s.Contents, Bytes: n, State: st, Took: time.Since(start)})
			return nil
		})
	if err != nil {
		return nil, err
	}
	for _, s := range m.Streams {
		if s.Contents != ContentsEmpty {
			continue
		}
		start := time.Now()
		info, err := createStream(ctx, nc, s.Name, configs[s.Name])
		if err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		created = append(created, s.Name)
		res.Streams = append(res.Streams, Restored{Name: s.Name, Contents: s.Contents, State: info.State, Took: time.Since(start)})
	}
	// The restored installation must be the one backed up: the same
	// sequences, the same messages.
	for i, rs := range res.Streams {
		if rs.Contents != ContentsSnapshot {
			continue
		}
		info, err := streamInfo(ctx, nc, rs.Name)
		if err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		want := m.stream(rs.Name).State
		if got := info.State; !sameState(got, want) {
			return nil, fmt.Errorf("restore: stream %s has %d messages, sequences %d-%d; the backup had %d messages, sequences %d-%d",
				rs.Name, got.Msgs, got.FirstSeq, got.LastSeq, want.Msgs, want.FirstSeq, want.LastSeq)
		}
		res.Streams[i].State = info.State
	}
	return res, nil
}

// Verify reads a whole backup and checks it without restoring anything:
// the manifest, every member's size and digest, and that each snapshot is
// complete and holds the messages the manifest says.
func Verify(r io.Reader) (*Result, error) {
	tr, m, err := openArchive(r)
	if err != nil {
		return nil, err
	}
	res := &Result{Manifest: m}
	err = walk(tr, m,
		func(f File) error {
			res.Files = append(res.Files, f)
			return nil
		},
		func(s *Stream, data io.Reader) error {
			start := time.Now()
			cr := &countReader{r: data}
			if s.Format == SnapshotNATSArchive {
				state := s.State
				if _, err := checkSnapshot(cr, &state); err != nil {
					var corrupt *corruptError
					if errors.As(err, &corrupt) {
						return err
					}
					return fmt.Errorf("%w: snapshot of %s %v", ErrCorrupt, s.Name, err)
				}
			}
			if _, err := io.Copy(io.Discard, cr); err != nil {
				return err
			}
			res.Streams = append(res.Streams, Restored{Name: s.Name, Contents: s.Contents, Bytes: cr.n, State: s.State, Took: time.Since(start)})
			return nil
		})
	if err != nil {
		return nil, err
	}
	for _, s := range m.Streams {
		if s.Contents == ContentsEmpty {
			res.Streams = append(res.Streams, Restored{Name: s.Name, Contents: s.Contents})
		}
	}
	return res, nil
}

// removeStreams deletes the streams a failed restore created. The server
// may still be finishing an aborted restore, so it tries for a while.
func removeStreams(ctx context.Context, nc *nats.Conn, names []string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	for _, name := range names {
		for {
			err := deleteStream(ctx, nc, name)
			if errors.Is(err, errStreamNotFound) {
				if _, err = streamInfo(ctx, nc, name); errors.Is(err, errStreamNotFound) {
					break
				}
			}
			select {
			case <-ctx.Done():
				if err == nil {
					err = ctx.Err()
				}
				return fmt.Errorf("stream %s: %w", name, err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// sameState reports whether a restored stream's state is the backed-up
// one: the same messages at the same sequences (the first sequence of an
// empty stream is not meaningful).
func sameState(got, want State) bool {
	return got.Msgs == want.Msgs && got.LastSeq == want.LastSeq && (want.Msgs == 0 || got.FirstSeq == want.FirstSeq)
}

func (m *Manifest) stream(name string) *Stream {
	for i := range m.Streams {
		if m.Streams[i].Name == name {
			return &m.Streams[i]
		}
	}
	return nil
}

// withReplicas returns config with num_replicas set, or config itself for 0.
func withReplicas(config json.RawMessage, replicas int) (json.RawMessage, error) {
	if replicas == 0 {
		return config, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(config, &fields); err != nil {
		return nil, err
	}
	fields["num_replicas"] = json.RawMessage(fmt.Sprint(replicas))
	return json.Marshal(fields)
}

// corruptError is a damaged archive: it matches ErrCorrupt.
type corruptError struct{ msg string }

func (e *corruptError) Error() string { return ErrCorrupt.Error() + ": " + e.msg }
func (e *corruptError) Is(target error) bool {
	return target == ErrCorrupt
}

func corruptf(format string, args ...any) error {
	return &corruptError{msg: fmt.Sprintf(format, args...)}
}

// openArchive opens a backup (a tar file, possibly gzipped) and reads its
// manifest.
func openArchive(r io.Reader) (*tar.Reader, *Manifest, error) {
	br := bufio.NewReader(r)
	if magic, err := br.Peek(2); err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, corruptf("gzip: %v", err)
		}
		r = zr
	} else {
		r = br
	}
	tr := tar.NewReader(r)
	h, err := tr.Next()
	if err == io.EOF {
		return nil, nil, corruptf("the file is empty")
	}
	if err != nil {
		return nil, nil, corruptf("not a tar archive: %v", err)
	}
	if h.Name != manifestMember {
		return nil, nil, corruptf("the first member is %q, not %s", h.Name, manifestMember)
	}
	if h.Size > maxSmallMember {
		return nil, nil, corruptf("%s is %d bytes", manifestMember, h.Size)
	}
	b, err := io.ReadAll(tr)
	if err != nil {
		return nil, nil, corruptf("%s: %v", manifestMember, err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, nil, corruptf("%s: %v", manifestMember, err)
	}
	if m.Format != Format {
		return nil, nil, corruptf("%s: format %q, not %q", manifestMember, m.Format, Format)
	}
	if m.Version > FormatVersion {
		return nil, nil, fmt.Errorf("the backup has format version %d, made by a newer flashgate; this one reads version %d", m.Version, FormatVersion)
	}
	if m.Version < 1 {
		return nil, nil, corruptf("%s: version %d", manifestMember, m.Version)
	}
	if err := m.validate(); err != nil {
		return nil, nil, err
	}
	return tr, &m, nil
}

func (m *Manifest) validate() error {
	names := map[string]bool{}
	var events bool
	for _, s := range m.Streams {
		if s.Name == "" || strings.ContainsAny(s.Name, " .*>/\\") || names[s.Name] {
			return corruptf("%s: stream name %q", manifestMember, s.Name)
		}
		names[s.Name] = true
		if len(s.Config) == 0 {
			return corruptf("%s: stream %s has no configuration", manifestMember, s.Name)
		}
		switch s.Contents {
		case ContentsSnapshot:
			if s.Member != streamsPrefix+s.Name+snapshotSuffix {
				return corruptf("%s: stream %s is in member %q", manifestMember, s.Name, s.Member)
			}
		case ContentsEmpty:
		default:
			return corruptf("%s: stream %s has contents %q", manifestMember, s.Name, s.Contents)
		}
		if s.Name == snapshotStream && s.Contents == ContentsSnapshot {
			events = true
		}
	}
	if !events {
		return corruptf("%s: no snapshot of the stream %s", manifestMember, snapshotStream)
	}
	files := map[string]bool{}
	for _, f := range m.Files {
		if err := checkFileName(f.Name); err != nil || files[f.Name] {
			return corruptf("%s: file %q", manifestMember, f.Name)
		}
		files[f.Name] = true
	}
	return nil
}

// walk reads the archive's members after the manifest, each exactly once
// and each listed in the manifest: files whole (onFile gets them checked),
// snapshots as a stream (onStream gets a reader that returns io.EOF only
// once the whole member was read and matched its size and digest, and a
// corruptError otherwise).
func walk(tr *tar.Reader, m *Manifest, onFile func(File) error, onStream func(*Stream, io.Reader) error) error {
	seen := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return corruptf("truncated or damaged after %d members: %v", len(seen)+1, err)
		}
		if seen[h.Name] {
			return corruptf("member %q appears twice", h.Name)
		}
		seen[h.Name] = true
		if h.Typeflag != tar.TypeReg {
			return corruptf("member %q is not a file", h.Name)
		}
		switch {
		case strings.HasPrefix(h.Name, dataPrefix):
			name := strings.TrimPrefix(h.Name, dataPrefix)
			want := m.file(name)
			if want == nil {
				return corruptf("member %q is not in the manifest", h.Name)
			}
			if h.Size != want.Size || h.Size > maxSmallMember {
				return corruptf("member %q is %d bytes, the manifest says %d", h.Name, h.Size, want.Size)
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				return corruptf("member %q: %v", h.Name, err)
			}
			if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != want.SHA256 {
				return corruptf("member %q does not match its SHA-256 in the manifest", h.Name)
			}
			f := *want
			f.Data = data
			if err := onFile(f); err != nil {
				return err
			}
		case strings.HasPrefix(h.Name, streamsPrefix):
			s := m.member(h.Name)
			if s == nil {
				return corruptf("member %q is not in the manifest", h.Name)
			}
			if h.Size != s.Size {
				return corruptf("member %q is %d bytes, the manifest says %d", h.Name, h.Size, s.Size)
			}
			vr := &verifyReader{r: tr, name: h.Name, size: s.Size, sum: s.SHA256, h: sha256.New()}
			if err := onStream(s, vr); err != nil {
				return err
			}
			if !vr.verified {
				if _, err := io.Copy(io.Discard, vr); err != nil {
					return err
				}
			}
		default:
			return corruptf("unknown member %q", h.Name)
		}
	}
	for _, f := range m.Files {
		if !seen[dataPrefix+f.Name] {
			return corruptf("member %q is missing: the archive is truncated", dataPrefix+f.Name)
		}
	}
	for _, s := range m.Streams {
		if s.Contents == ContentsSnapshot && !seen[s.Member] {
			return corruptf("member %q is missing: the archive is truncated", s.Member)
		}
	}
	return nil
}

func (m *Manifest) file(name string) *File {
	for i := range m.Files {
		if m.Files[i].Name == name {
			return &m.Files[i]
		}
	}
	return nil
}

func (m *Manifest) member(member string) *Stream {
	for i := range m.Streams {
		if m.Streams[i].Contents == ContentsSnapshot && m.Streams[i].Member == member {
			return &m.Streams[i]
		}
	}
	return nil
}

// verifyReader reads an archive member and, at its end, checks its size
// and digest: it returns io.EOF only for an intact member.
type verifyReader struct {
	r        io.Reader
	name     string
	size     int64
	sum      string
	h        hash.Hash
	n        int64
	verified bool
}

func (v *verifyReader) Read(p []byte) (int, error) {
	if v.verified {
		return 0, io.EOF
	}
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if err == io.EOF {
		if v.n != v.size {
			return n, corruptf("member %q ends after %d of %d bytes: the archive is truncated", v.name, v.n, v.size)
		}
		if hex.EncodeToString(v.h.Sum(nil)) != v.sum {
			return n, corruptf("member %q does not match its SHA-256 in the manifest: the archive is damaged", v.name)
		}
		v.verified = true
		return n, io.EOF
	}
	if err != nil {
		return n, corruptf("member %q after %d bytes: %v", v.name, v.n, err)
	}
	return n, nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
