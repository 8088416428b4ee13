package backup

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/nats-io/nats-server/v2/server/archive"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The JetStream API, spoken with plain NATS requests: nats.go's jetstream
// package has no snapshot or restore. Request and response bodies follow
// nats-server's JSApiStreamSnapshotRequest/Response and
// JSApiStreamRestoreRequest/Response.
const apiPrefix = "$JS.API."

const (
	// apiTimeout bounds one API request.
	apiTimeout = 10 * time.Second
	// chunkTimeout bounds the wait for the next snapshot chunk, or for the
	// server's ack of a restore chunk. The server itself gives up on a
	// snapshot receiver after 5 s without acks.
	chunkTimeout = 30 * time.Second
	// finishTimeout bounds the wait for the server's answer once all of a
	// restore's data is sent.
	finishTimeout = 2 * time.Minute
	// restoreChunk is the size of the chunks a restore sends: the server's
	// default snapshot chunk, well under any server's max payload (1 MiB by
	// default).
	restoreChunk = 128 << 10
)

// API error codes (nats-server errors.json).
const (
	errCodeStreamNotFound      = 10059
	errCodeStreamExistsRestore = 10130
)

var errStreamNotFound = errors.New("stream not found")

// request sends one JetStream API request and decodes the answer into out.
// An API error is returned as a *jetstream.APIError.
func request(ctx context.Context, nc *nats.Conn, subject string, body []byte, out any) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	msg, err := nc.RequestWithContext(ctx, subject, body)
	if errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("%s: no JetStream answers (is JetStream enabled for this account?)", subject)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", subject, err)
	}
	return decodeAPI(msg.Data, out)
}

func decodeAPI(data []byte, out any) error {
	var resp struct {
		Error *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(data, &resp); err != nil {
		return fmt.Errorf("JetStream API answer: %w", err)
	}
	if resp.Error != nil {
		if resp.Error.ErrorCode == errCodeStreamNotFound {
			return fmt.Errorf("%w (%v)", errStreamNotFound, resp.Error)
		}
		return resp.Error
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("JetStream API answer: %w", err)
	}
	return nil
}

type streamInfoResponse struct {
	Config json.RawMessage `json:"config"`
	State  State           `json:"state"`
}

func streamInfo(ctx context.Context, nc *nats.Conn, name string) (*streamInfoResponse, error) {
	var info streamInfoResponse
	if err := request(ctx, nc, apiPrefix+"STREAM.INFO."+name, nil, &info); err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	return &info, nil
}

func createStream(ctx context.Context, nc *nats.Conn, name string, config json.RawMessage) (*streamInfoResponse, error) {
	var info streamInfoResponse
	if err := request(ctx, nc, apiPrefix+"STREAM.CREATE."+name, config, &info); err != nil {
		return nil, fmt.Errorf("create stream %s: %w", name, err)
	}
	return &info, nil
}

func deleteStream(ctx context.Context, nc *nats.Conn, name string) error {
	if err := request(ctx, nc, apiPrefix+"STREAM.DELETE."+name, nil, nil); err != nil {
		return fmt.Errorf("delete stream %s: %w", name, err)
	}
	return nil
}

// snapshotResult is what the server says about a snapshot it starts.
type snapshotResult struct {
	Config json.RawMessage `json:"config"`
	State  *State          `json:"state"`
}

// snapshot asks the server for a snapshot of stream name and writes the
// chunks it sends to w, acking each (the server keeps a window of chunks in
// flight), until the server's empty end-of-snapshot message.
func snapshot(ctx context.Context, nc *nats.Conn, name string, w io.Writer) (*snapshotResult, error) {
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("snapshot of %s: %w", name, err)
	}
	defer sub.Unsubscribe()
	req, err := json.Marshal(struct {
		DeliverSubject string `json:"deliver_subject"`
		NoConsumers    bool   `json:"no_consumers"`
	}{inbox, true}) // nothing to keep: the ordered consumers are ephemeral, and the fulfilment intake,
	// re-created after a restore, reads the decisions from the start again (the orders queue is not
	// in the backup; the worker skips orders already confirmed)
	if err != nil {
		return nil, err
	}
	var res snapshotResult
	if err := request(ctx, nc, apiPrefix+"STREAM.SNAPSHOT."+name, req, &res); err != nil {
		return nil, fmt.Errorf("snapshot of %s: %w", name, err)
	}
	if res.State == nil || len(res.Config) == 0 {
		return nil, fmt.Errorf("snapshot of %s: the server's answer has no state or configuration", name)
	}
	for {
		cctx, cancel := context.WithTimeout(ctx, chunkTimeout)
		m, err := sub.NextMsgWithContext(cctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("snapshot of %s: waiting for data: %w", name, err)
		}
		if len(m.Data) == 0 {
			// The end; a status other than 204 says why the server stopped.
			if st := m.Header.Get("Status"); st != "" && st != "204" {
				return nil, fmt.Errorf("snapshot of %s: the server stopped it: %s %s", name, st, m.Header.Get("Description"))
			}
			return &res, nil
		}
		if _, err := w.Write(m.Data); err != nil {
			return nil, fmt.Errorf("snapshot of %s: %w", name, err)
		}
		if m.Reply != "" {
			if err := m.Respond(nil); err != nil {
				return nil, fmt.Errorf("snapshot of %s: ack: %w", name, err)
			}
		}
	}
}

// restoreStream restores stream name from the snapshot data r yields, with
// the configuration given. It sends r in chunks, each acked by the server,
// and the end-of-data message only once r returned io.EOF: a read error
// (a damaged archive) aborts the restore instead. It returns the restored
// stream's state as the server reports it.
func restoreStream(ctx context.Context, nc *nats.Conn, name string, config json.RawMessage, state State, r io.Reader) (n int64, st State, started bool, err error) {
	req, err := json.Marshal(struct {
		Config json.RawMessage `json:"config"`
		State  State           `json:"state"`
	}{config, state})
	if err != nil {
		return 0, State{}, false, err
	}
	var resp struct {
		DeliverSubject string `json:"deliver_subject"`
	}
	if err := request(ctx, nc, apiPrefix+"STREAM.RESTORE."+name, req, &resp); err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeStreamExistsRestore {
			return 0, State{}, false, fmt.Errorf("%w: stream %s exists", ErrExists, name)
		}
		return 0, State{}, false, fmt.Errorf("restore of %s: %w", name, err)
	}
	if resp.DeliverSubject == "" {
		return 0, State{}, false, fmt.Errorf("restore of %s: the server named no subject for the data", name)
	}
	abort := func() {
		// A chunk without a reply subject makes the server drop the restore.
		_ = nc.Publish(resp.DeliverSubject, []byte("abort"))
		_ = nc.Flush()
	}
	buf := make([]byte, restoreChunk)
	for {
		k, rerr := fill(r, buf)
		if rerr != nil && rerr != io.EOF {
			abort()
			return n, State{}, true, rerr
		}
		if k > 0 {
			if err := sendChunk(ctx, nc, resp.DeliverSubject, buf[:k]); err != nil {
				abort()
				err = fmt.Errorf("restore of %s after %d bytes: %w", name, n, err)
				// The server may have failed on damaged data before the
				// archive's digest could tell: if so, say so.
				if ctx.Err() == nil {
					if _, derr := io.Copy(io.Discard, r); derr != nil {
						return n, State{}, true, fmt.Errorf("%w (%v)", derr, err)
					}
				}
				return n, State{}, true, err
			}
			n += int64(k)
		}
		if rerr == io.EOF {
			break
		}
	}
	// The end of the data; the server answers once the stream is restored.
	cctx, cancel := context.WithTimeout(ctx, finishTimeout)
	defer cancel()
	m, err := nc.RequestWithContext(cctx, resp.DeliverSubject, nil)
	if err != nil {
		return n, State{}, true, fmt.Errorf("restore of %s: waiting for the server to finish: %w", name, err)
	}
	var done struct {
		State *State `json:"state"`
	}
	if err := decodeAPI(m.Data, &done); err != nil {
		return n, State{}, true, fmt.Errorf("restore of %s: %w", name, err)
	}
	if done.State == nil {
		return n, State{}, true, fmt.Errorf("restore of %s: the server's answer has no state", name)
	}
	return n, *done.State, true, nil
}

// sendChunk sends one chunk of a restore and waits for its ack: an empty
// message, or an API error.
func sendChunk(ctx context.Context, nc *nats.Conn, subject string, chunk []byte) error {
	ctx, cancel := context.WithTimeout(ctx, chunkTimeout)
	defer cancel()
	m, err := nc.RequestWithContext(ctx, subject, chunk)
	if errors.Is(err, nats.ErrNoResponders) {
		return errors.New("the server dropped the restore")
	}
	if err != nil {
		return err
	}
	if len(m.Data) > 0 {
		return decodeAPI(m.Data, nil)
	}
	return nil
}

// fill reads into buf until it is full or r ends. It returns io.EOF only
// with r's clean end.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := r.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// checkSnapshot reads a snapshot as the server wrote it and checks that it
// is complete: the server's archive with its state first and its end marker
// last, holding state.Msgs messages up to state.LastSeq. It returns the
// snapshot's format. An older server's format (a tar of store files) is only
// recognised, not checked.
func checkSnapshot(r io.Reader, state *State) (string, error) {
	br := bufio.NewReader(s2.NewReader(r))
	magic, err := br.Peek(len(archive.MagicBytes))
	if err != nil {
		return "", fmt.Errorf("unreadable: %w", err)
	}
	if string(magic) != archive.MagicBytes {
		return SnapshotNATSLegacy, nil
	}
	ar := archive.NewReader(br)
	h, err := ar.Next()
	if err != nil {
		return "", fmt.Errorf("unreadable: %w", err)
	}
	if h.Name != "state.json" {
		return "", fmt.Errorf("starts with %q, not its state", h.Name)
	}
	var in State
	if err := json.NewDecoder(ar).Decode(&in); err != nil {
		return "", fmt.Errorf("its state: %w", err)
	}
	if in.FirstSeq != state.FirstSeq || in.LastSeq != state.LastSeq {
		return "", fmt.Errorf("holds sequences %d-%d, the server announced %d-%d", in.FirstSeq, in.LastSeq, state.FirstSeq, state.LastSeq)
	}
	var msgs, last uint64
	for {
		h, err := ar.Next()
		if err != nil {
			return "", fmt.Errorf("truncated after %d messages: %w", msgs, err)
		}
		if h.Sequence == 0 {
			if h.Name == "" && h.Timestamp == 0 && h.HeaderSize == 0 && h.PayloadSize == 0 {
				break // end of the snapshot
			}
			continue // a consumer's state
		}
		if h.Sequence <= last || h.Sequence > state.LastSeq {
			return "", fmt.Errorf("message sequence %d out of order or range", h.Sequence)
		}
		last = h.Sequence
		msgs++
	}
	if msgs != state.Msgs {
		return "", fmt.Errorf("holds %d messages, the server announced %d (were messages deleted during the backup?)", msgs, state.Msgs)
	}
	return SnapshotNATSArchive, nil
}
